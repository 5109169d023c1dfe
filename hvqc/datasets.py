"""Image datasets for the small models: MNIST digits and CelebA faces.

Readers return whole datasets as tensors (both fit in memory many times over);
samplers draw seeded training batches from them. Photos for the photo model are
read by :class:`hvqc.image.CropSampler`.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data import require

__all__ = ["read_idx", "mnist", "celeba", "TensorSampler", "MNIST_SIZE", "FACE_SIZE", "FACE_BOX"]

MNIST_SIZE = 32                  # HQA resizes the 28x28 digits to 32x32
FACE_SIZE = 64
FACE_BOX = (12, 22, 76, 86)      # 64x64 centre crop of the 89x109 aligned CelebA faces


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) as a numpy array of unsigned bytes."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, dtype, ndim = struct.unpack_from(">HBB", raw)
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack_from(f">{ndim}I", raw, 4)
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def mnist(split: str = "train", size: int = MNIST_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as ``([N, 1, size, size]`` float in [0, 1], ``[N]`` int64 labels).

    ``split`` is "train" (60,000) or "test" (10,000). The 28x28 digits are resized
    to ``size`` with bilinear interpolation, as HQA does.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = require("mnist")
    stem = "train" if split == "train" else "t10k"
    images = read_idx(root / f"{stem}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{stem}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    return x, torch.from_numpy(labels.astype(np.int64))


def celeba(split: str = "train", test_count: int = 500) -> torch.Tensor:
    """CelebA faces as ``[N, 3, 64, 64]`` float in [0, 1] (centre crop :data:`FACE_BOX`).

    The files are sorted by name; the last ``test_count`` are the test split and the
    rest the training split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    files = sorted(require("celeba").glob("*.jpg"))
    files = files[-test_count:] if split == "test" else files[:-test_count]
    arr = np.stack([np.asarray(Image.open(f).convert("RGB").crop(FACE_BOX)) for f in files])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)


class TensorSampler:
    """Seeded random training batches from an in-memory ``[N, C, H, W]`` dataset.

    Args:
        data: the images.
        seed: seed of the sampler's generator.
        flip: randomly mirror left-right (faces; not digits).
    """

    def __init__(self, data: torch.Tensor, seed: int = 0, flip: bool = False):
        self.data, self.flip = data, flip
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.data)

    def sample(self, batch: int) -> torch.Tensor:
        idx = torch.randint(len(self.data), (batch,), generator=self.gen)
        x = self.data[idx]
        if self.flip:
            m = torch.rand(batch, generator=self.gen) < 0.5
            x[m] = x[m].flip(-1)
        return x
