"""The image modality: model builders, image IO with mode handling, padding, data.

Images enter the model as ``[1, 3, H, W]`` floats in [0, 1]; gray images are
replicated to three channels and averaged back on output. Alpha is not modelled:
it travels losslessly beside the codes (zlib, a tagged section of the file; see
:data:`hvqc.codec.ALPHA_TAG`).
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .hierarchy import HierarchyConfig, LevelSpec

__all__ = ["training_files", "photo_config", "mnist_config", "faces_config", "to_channels", "load_image", "check_size", "normalise_mode", "to_tensor", "from_tensor", "pad_to",
           "CropSampler", "IMAGE_SUFFIXES", "MODES", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE"]

MODES = ("L", "LA", "RGB", "RGBA", "I;16")
MAX_IMAGE_PIXELS = 40_000_000   # about 6 GB of activations at the finest level
MAX_IMAGE_SIDE = 1 << 16        # the container's limit on width and height
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


def photo_config() -> HierarchyConfig:
    """The natural-photo model: codes at strides 8, 16 and 32 (0.14, 0.031, 0.0078 bpp nominal).

    The top prior codes its level in 9 groups (phase 3), the others in 4: the top has no
    level above to condition on, so the codes already sent are all the context it gets
    (on 54 held-out training photos, 9 groups took level 3 from 6.39 to 6.20 bits a code
    and level 2 from 5.01 to 4.99, where 4 groups trained alike reached 4.95)."""
    return HierarchyConfig(dims=2, channels=3, levels=[
        LevelSpec(codes=512, dim=64, hidden=128, down=3, blocks=2, prior_hidden=128),
        LevelSpec(codes=256, dim=64, hidden=128, down=1, blocks=2, prior_hidden=128),
        LevelSpec(codes=256, dim=64, hidden=128, down=1, blocks=2, prior_hidden=96, prior_phase=3),
    ])


def mnist_config() -> HierarchyConfig:
    """HQA's MNIST model: 32x32 gray digits, 5 levels halving each time (16x16, 8x8,
    4x4, 2x2 and 1x1 latents), 256 codes each, so the top level is one code (8 bits
    nominal). The 1x1 top needs no context groups."""
    levels = [LevelSpec(codes=256, dim=64, hidden=64, down=1, blocks=2, prior_hidden=64)
              for _ in range(5)]
    levels[-1].prior_phase = 1
    return HierarchyConfig(dims=2, channels=1, levels=levels)


def faces_config() -> HierarchyConfig:
    """CelebA faces at 64x64: 5 levels with 16x16, 8x8, 4x4, 2x2 and 1x1 latents."""
    levels = [LevelSpec(codes=512, dim=64, hidden=96, down=2, blocks=2, prior_hidden=96)]
    levels += [LevelSpec(codes=256, dim=64, hidden=96, down=1, blocks=2, prior_hidden=64)
               for _ in range(4)]
    levels[-1].prior_phase = 1
    return HierarchyConfig(dims=2, channels=3, levels=levels)


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``[B, 3, H, W]`` RGB -> the model's channels (gray models average the three)."""
    if channels == x.shape[1]:
        return x
    if channels == 1:
        return x.mean(1, keepdim=True)
    raise ValueError(f"cannot map {x.shape[1]} channels onto {channels}")


def check_size(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Raise ValueError for an image the codec cannot take (too many pixels or too wide)."""
    if width * height > max_pixels:
        raise ValueError(f"image too large: {width}x{height} exceeds {max_pixels} pixels")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ValueError(f"image too large: {width}x{height} exceeds {MAX_IMAGE_SIDE} pixels on a side")


def load_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open any Pillow-readable image (the first frame of an animation), apply EXIF
    orientation, and normalise its mode (:func:`normalise_mode`). With ``max_pixels``
    the size (:func:`check_size`) is checked before any pixel is decoded."""
    with warnings.catch_warnings():
        # Our own size check below replaces Pillow's decompression-bomb warning (which
        # would print several lines); Pillow still refuses truly absurd sizes itself.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    if max_pixels is not None:
        check_size(img.width, img.height, max_pixels)
    img.load()
    return normalise_mode(ImageOps.exif_transpose(img))


def normalise_mode(img: Image.Image) -> Image.Image:
    """Map any Pillow mode onto :data:`MODES`: palette -> RGB (RGBA with transparency),
    1-bit and float -> L, 16/32-bit integer -> I;16 (clipped), CMYK/YCbCr/... -> RGB."""
    m = img.mode
    if m in MODES:
        return img
    if m == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if m == "PA":
        return img.convert("RGBA")
    if m in ("1", "F"):
        return img.convert("L")
    if m.startswith("I;16") or m == "I":
        arr = np.asarray(img, dtype=np.int64).clip(0, 65535)
        return _i16(arr)
    if m in ("La",):
        return img.convert("LA")
    if m in ("RGBa", "RGBX") or "A" in m:
        return img.convert("RGBA")
    return img.convert("RGB")


def _i16(arr: np.ndarray) -> Image.Image:
    """``[H, W]`` ints in 0..65535 -> an ``I;16`` image. Built from raw bytes: Pillow 13's
    ``fromarray`` rejects ``mode="I;16"``."""
    return Image.frombytes("I;16", (arr.shape[1], arr.shape[0]), arr.astype("<u2").tobytes())


def to_tensor(img: Image.Image) -> tuple[torch.Tensor, np.ndarray | None]:
    """``PIL.Image`` (a :data:`MODES` mode) -> (``[1, 3, H, W]`` float in [0, 1], alpha or None)."""
    alpha = None
    if img.mode == "I;16":
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        x = torch.from_numpy(arr)[None].expand(3, -1, -1)
    else:
        if img.mode in ("LA", "RGBA"):
            alpha = np.asarray(img.getchannel("A"), dtype=np.uint8).copy()
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        x = torch.from_numpy(arr).permute(2, 0, 1)
    return x[None].contiguous(), alpha


def from_tensor(x: torch.Tensor, mode: str, alpha: np.ndarray | None = None) -> Image.Image:
    """Inverse of :func:`to_tensor`: ``[1, 3, H, W]`` (or ``[1, 1, H, W]`` from a gray
    model) -> image in ``mode``."""
    x = x.detach().float().clamp(0, 1)[0]
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    if mode == "I;16":
        return _i16((x.mean(0) * 65535).round().to(torch.int32).numpy())
    rgb = (x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(rgb, mode="RGB")
    if mode in ("L", "LA"):
        img = Image.fromarray((x.mean(0) * 255).round().to(torch.uint8).numpy(), mode="L")
    if mode in ("LA", "RGBA"):
        a = Image.fromarray(alpha if alpha is not None else
                            np.full(img.size[::-1], 255, np.uint8), mode="L")
        img.putalpha(a)
    return img


def pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad ``[B, C, H, W]`` on the bottom/right to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def training_files(folders: list[Path]) -> list[Path]:
    """The image files under ``folders`` (recursively, by suffix), sorted; FileNotFoundError
    if there are none."""
    files = sorted(p for f in folders for p in Path(f).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no training images under {[str(f) for f in folders]}")
    return files


class CropSampler:
    """Random training crops from image folders, decoded once and kept in memory.

    Args:
        folders: directories searched recursively for images.
        crop: side of the square crops.
        seed: seed of the sampler's own RNG.
    """

    def __init__(self, folders: list[Path], crop: int, seed: int = 0):
        files = training_files(folders)
        self.crop, self.rng = crop, random.Random(seed)
        self.images: list[torch.Tensor] = []
        for p in files:
            img = Image.open(p).convert("RGB")
            if min(img.size) < crop:
                s = crop / min(img.size)
                img = img.resize((max(crop, round(img.width * s)), max(crop, round(img.height * s))),
                                 Image.BICUBIC)
            self.images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        self.files = files

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch: int) -> torch.Tensor:
        """``[batch, 3, crop, crop]`` float crops in [0, 1] with random flips."""
        out = []
        for _ in range(batch):
            im = self.images[self.rng.randrange(len(self.images))]
            h, w = im.shape[1:]
            y, x = self.rng.randrange(h - self.crop + 1), self.rng.randrange(w - self.crop + 1)
            c = im[:, y:y + self.crop, x:x + self.crop]
            if self.rng.random() < 0.5:
                c = c.flip(2)
            out.append(c)
        return torch.stack(out).float().div_(255)
