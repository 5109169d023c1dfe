"""Distortion measures: what training minimises and what the encoder's search
(:mod:`hvqc.search`) scores, on signals in [0, 1] (images) or features (speech).

Each takes ``(x_hat, x)`` of equal shape and returns a scalar tensor; lower is better.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim, ssim

__all__ = ["MSSSIM_WEIGHTS", "msssim_mse", "ssim_mse", "mse", "image_distortion"]

MSSSIM_WEIGHTS = [0.0448, 0.2856, 0.3001, 0.2363]    # 4 scales, 7-px window: fits 128 px crops
MSSSIM_MIN_SIDE = 97     # pytorch-msssim wants a short side over 6 * 2**4 px for a 7-px window
SSIM_MIN_SIDE = 7


def _clamped(x_hat: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] as the decoder's output is, with the identity's gradient."""
    return x_hat + (x_hat.clamp(0, 1) - x_hat).detach()


def msssim_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(1 - MS-SSIM) + 10 * MSE`` on [0, 1] RGB: MS-SSIM-weighted, with MSE to keep colour."""
    x_hat = _clamped(x_hat)
    return (1 - ms_ssim(x_hat, x, data_range=1.0, weights=MSSSIM_WEIGHTS, win_size=7)) + 10 * F.mse_loss(x_hat, x)


def ssim_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(1 - SSIM) + 10 * MSE`` (7-px window), for images too small for MS-SSIM's scales."""
    x_hat = _clamped(x_hat)
    return (1 - ssim(x_hat, x, data_range=1.0, win_size=7)) + 10 * F.mse_loss(x_hat, x)


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Plain mean squared error."""
    return F.mse_loss(x_hat, x)


def image_distortion(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The distortion an image of this size can be scored with: :func:`msssim_mse` when
    its short side allows MS-SSIM's four scales, else :func:`ssim_mse`, else :func:`mse`."""
    side = min(x.shape[-2:])
    if side >= MSSSIM_MIN_SIDE:
        return msssim_mse(x_hat, x)
    if side >= SSIM_MIN_SIDE:
        return ssim_mse(x_hat, x)
    return mse(_clamped(x_hat), x)
