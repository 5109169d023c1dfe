"""Training recipes: which data, crops, losses and settings make each shipped model.

``hvqc train`` calls these; the weights manifest records the command that did.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim, ssim

from .data import require
from .datasets import TensorSampler, celeba, mnist
from .image import CropSampler, faces_config, mnist_config, photo_config
from .train import TrainSettings, train

__all__ = ["RECIPES", "photo_distortion", "mse_distortion", "train_recipe"]

PHOTO_FOLDERS = ("bsds500", "imagenet_sample", "sun_hays80")   # never kodak
MSSSIM_WEIGHTS = [0.0448, 0.2856, 0.3001, 0.2363]                # 4 scales, 7-px window: fits 128 px crops


def photo_distortion(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(1 - MS-SSIM) + 10 * MSE`` on [0, 1] RGB: MS-SSIM-weighted, with MSE to keep colour."""
    x_hat = x_hat + (x_hat.clamp(0, 1) - x_hat).detach()   # straight-through clamp
    w = torch.tensor(MSSSIM_WEIGHTS)
    return (1 - ms_ssim(x_hat, x, data_range=1.0, weights=w, win_size=7)) + 10 * F.mse_loss(x_hat, x)


def faces_distortion(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(1 - SSIM) + 10 * MSE`` (7-px window): MS-SSIM's scales do not fit 64 px."""
    x_hat = x_hat + (x_hat.clamp(0, 1) - x_hat).detach()
    return (1 - ssim(x_hat, x, data_range=1.0, win_size=7)) + 10 * F.mse_loss(x_hat, x)


def mse_distortion(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Plain MSE (HQA's digits loss)."""
    return F.mse_loss(x_hat, x)


def _stage2(settings: TrainSettings) -> None:
    """Stage 2: freeze level 0 and train the levels above through the pixels they
    decode to, at the low temperature where stage 1 ended."""
    settings.signal_weight, settings.freeze_levels = 1.0, 1
    settings.tau_start = settings.tau_end = 0.1
    settings.lr = 1e-4


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))          # torchrun: each process its own batches


def train_photo(run_dir: Path, steps: int, batch: int = 8, crop: int = 128, seed: int = 0,
                progress: bool = True, command: str = "", init: str = "",
                upper: bool = False) -> Path:
    """The photo model. Stage 1 trains every level; ``upper`` (stage 2, from ``init``)
    freezes level 0 and trains the levels above with a loss on the pixels they decode
    to through the levels below, at the low temperature where stage 1 ended."""
    folders = [require(f) for f in PHOTO_FOLDERS]
    sampler = CropSampler(folders, crop, seed + 1000 * _rank())
    meta = {"data": ", ".join(PHOTO_FOLDERS), "images": len(sampler), "crop": crop,
            "batch": batch, "command": command}
    settings = TrainSettings(steps=steps, seed=seed, init=init)
    if upper:
        _stage2(settings)
    return train(photo_config(), lambda step: sampler.sample(batch), photo_distortion, run_dir,
                 settings, meta, progress)


def train_photo_upper(run_dir: Path, steps: int, **kw) -> Path:
    return train_photo(run_dir, steps, upper=True, **kw)


def train_mnist(run_dir: Path, steps: int, batch: int = 64, crop: int | None = None, seed: int = 0,
                progress: bool = True, command: str = "", init: str = "", upper: bool = False) -> Path:
    """HQA's digits model on the 60,000 MNIST training digits at 32x32, MSE loss."""
    data, _ = mnist("train")
    sampler = TensorSampler(data, seed + 1000 * _rank())
    meta = {"data": "mnist train (60,000 digits, resized to 32x32)", "images": len(sampler),
            "batch": batch, "command": command, "stream": "joint", "sample_size": [32, 32]}
    settings = TrainSettings(steps=steps, seed=seed, init=init, ckpt_every=500)
    if upper:
        _stage2(settings)
    return train(mnist_config(), lambda step: sampler.sample(batch), mse_distortion, run_dir,
                 settings, meta, progress)


def train_faces(run_dir: Path, steps: int, batch: int = 32, crop: int | None = None, seed: int = 0,
                progress: bool = True, command: str = "", init: str = "", upper: bool = False) -> Path:
    """CelebA faces (64x64 centre crops, flips), SSIM + MSE loss."""
    data = celeba("train")
    sampler = TensorSampler(data, seed + 1000 * _rank(), flip=True)
    meta = {"data": f"celeba 000001-004500 ({len(data)} faces, 64x64 centre crop); "
                    "004501-005000 held out", "images": len(sampler), "batch": batch, "command": command,
            "stream": "joint", "sample_size": [64, 64]}
    settings = TrainSettings(steps=steps, seed=seed, init=init, ckpt_every=500)
    if upper:
        _stage2(settings)
    return train(faces_config(), lambda step: sampler.sample(batch), faces_distortion, run_dir,
                 settings, meta, progress)


RECIPES = {"photo": train_photo, "photo-upper": train_photo_upper,
           "mnist": train_mnist, "mnist-upper": lambda run, steps, **kw: train_mnist(run, steps, upper=True, **kw),
           "faces": train_faces, "faces-upper": lambda run, steps, **kw: train_faces(run, steps, upper=True, **kw)}


def train_recipe(name: str, run_dir: Path, steps: int, **kw) -> Path:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return RECIPES[name](Path(run_dir), steps, **kw)
