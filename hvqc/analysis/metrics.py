"""Rate and quality measures: bits per pixel or per second (whole-file, payload or
estimated from the model's probabilities), PSNR, MS-SSIM (pytorch-msssim)."""
from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim

__all__ = ["bpp", "bps", "estimated_bits", "psnr", "ms_ssim", "ms_ssim_db", "as_float_rgb", "MS_SSIM_MIN_SIDE", "ms_ssim_defined",
           "mean_or_none"]

MS_SSIM_MIN_SIDE = 161   # 5 scales of an 11-px window: the short side must exceed (11 - 1) * 2**4


def as_float_rgb(img) -> torch.Tensor:
    """PIL image or ``[H, W, 3]`` uint8 array -> ``[1, 3, H, W]`` float64 in [0, 1]."""
    arr = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img)
    return torch.from_numpy(arr.astype(np.float64) / 255.0).permute(2, 0, 1)[None]


def bpp(num_bytes: int, width: int, height: int) -> float:
    """Whole-file bits per pixel."""
    return 8.0 * num_bytes / (width * height)


def bps(num_bytes: int, seconds: float) -> float:
    """Bits per second of ``num_bytes`` (whole file or payload) for ``seconds`` of audio."""
    if not seconds > 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    return 8.0 * num_bytes / seconds


def estimated_bits(probs) -> float:
    """``-sum log2 p``: the ideal code length of symbols coded with probabilities ``probs``
    (the probability the model gave each coded symbol; array or tensor, any shape).
    Divide by pixels or seconds for an estimated rate."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    if (p <= 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in (0, 1]")
    return float(-torch.log2(p).sum())


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB between two ``[..., H, W]`` tensors (8-bit RGB, as in CompressAI)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(data_range ** 2 / mse)


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """MS-SSIM (pytorch-msssim defaults: 5 scales, 11-px window), RGB, data_range 1.
    Needs more than 160 px on the short side."""
    return float(_ms_ssim(a.float(), b.float(), data_range=1.0))


def ms_ssim_defined(width: int, height: int) -> bool:
    """Whether :func:`ms_ssim` can be computed on an image of this size."""
    return min(width, height) >= MS_SSIM_MIN_SIDE


def mean_or_none(values) -> float | None:
    """Mean of the values that are not None (None if there are none)."""
    v = [float(x) for x in values if x is not None]
    return sum(v) / len(v) if v else None


def ms_ssim_db(value: float) -> float:
    """MS-SSIM in dB: ``-10 log10(1 - MS-SSIM)``."""
    return -10 * math.log10(max(1 - value, 1e-12))
