"""Training recipes: which data, crops, losses and settings make each shipped model.

``hvqc train`` calls these; the weights manifest records the command that did.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from PIL import Image

from .data import require
from .datasets import TensorSampler, celeba, mnist
from .image import CropSampler, faces_config, mnist_config, pad_to, photo_config, to_tensor, training_files
from .losses import mse, msssim_mse, ssim_mse
from .train import TrainSettings, train, train_code_priors

__all__ = ["RECIPES", "train_recipe"]

PHOTO_FOLDERS = ("bsds500", "imagenet_sample", "sun_hays80")   # never kodak
DECODE_RATE_WEIGHT = 2.0   # the decode stage's distortion per bpp: about the photo model's
                           # (1 - MS-SSIM) slope between its levels 1 and 2 (1) and 2 and 3 (6)


def _stage(settings: TrainSettings, stage: str, levels: int, top: int = 2,
           freeze: int | None = None, rate_weight: float | None = None) -> None:
    """Adjust the settings for a stage: ``all`` (stage 1, every level); ``tune`` (every
    level again, from ``init``, at stage 1's final temperature 0.1 and half its peak
    learning rate: more training of a finished model, e.g. on a GPU); ``top`` (the
    ``top`` levels retrained from scratch on the frozen levels below, HQA's greedy
    layer-wise training, from ``init``; without the commitment term for the first 40 %
    of steps: a fresh encoder's outputs on a latent with a large constant part are
    nearly image-independent, and committing them at once to codewords collapses the
    level to one point); ``upper``
    (stage 2: freeze level 0 and train the levels above through the pixels they decode
    to, at the low temperature where stage 1 ended); ``priors`` (stage 3: the codes of
    the finished model stay fixed and only the priors learn them); ``decoder`` (stage 4:
    only level 0's decoder learns, on what decoding each cut a file can carry feeds it:
    the hard codewords of level 0, and the priors' mean codewords under every level
    above and every refinement, which stages 1-3 never show it; codes and rates stay as
    they are); ``decode`` (the whole decode side: the priors and every decoder, on the
    rate of the fixed codes in bpp times ``rate_weight`` plus the mean distortion of every
    cut as ``decoder`` feeds them; ``decoder`` never moves the priors, which ``priors``
    fits only to the codes, not to how a cut decodes through their means). ``freeze``
    overrides how many bottom levels stay fixed; ``rate_weight``, the decode stage's."""
    if stage == "top":
        settings.freeze_levels = settings.keep_levels = levels - top
        settings.commit_warmup = 0.4
    elif stage == "tune":
        settings.tau_start = settings.tau_end = 0.1
        settings.lr = 1e-4
    elif stage == "upper":
        settings.signal_weight, settings.freeze_levels = 1.0, 1
        settings.tau_start = settings.tau_end = 0.1
        settings.lr = 1e-4
    elif stage == "priors":
        settings.priors_only = True
        settings.tau_start = settings.tau_end = 0.1
        settings.lr = 5e-4
    elif stage == "decoder":
        settings.decoder_only = True
        settings.tau_start = settings.tau_end = 0.1      # unused: no level quantizes softly
        settings.lr = 1e-4
    elif stage == "decode":
        settings.decode_side = True
        settings.tau_start = settings.tau_end = 0.1      # unused: no level quantizes softly
        settings.lr = 1e-4
        settings.rate_weight = DECODE_RATE_WEIGHT
    elif stage != "all":
        raise ValueError(f"unknown stage {stage!r}")
    if rate_weight is not None:
        if stage != "decode":
            raise ValueError("--rate-weight is for the decode stage (X-decode) only")
        if rate_weight < 0:
            raise ValueError(f"--rate-weight must be 0 or more, got {rate_weight:g}")
        settings.rate_weight = rate_weight
    if freeze is not None:
        if not 0 <= freeze < levels:
            raise ValueError(f"--freeze must be in 0..{levels - 1} for this model, got {freeze}")
        settings.freeze_levels = freeze


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))          # torchrun: each process its own batches


def _whole_photos(folders: list[Path], stride: int):
    """``() -> iterator`` over every photo of ``folders`` and its mirror image, each
    ``[1, 3, H, W]`` padded to ``stride`` as the codec pads it."""
    files = training_files(folders)

    def signals():
        for p in files:
            img = Image.open(p).convert("RGB")
            for im in (img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
                yield pad_to(to_tensor(im)[0], stride)
    return signals, len(files)


def train_photo(run_dir: Path, steps: int, batch: int = 8, crop: int = 128, seed: int = 0,
                progress: bool = True, command: str = "", init: str = "",
                stage: str = "all", freeze: int | None = None, device: str = "cpu",
                seconds: float = 0.0, rate_weight: float | None = None,
                levels: list[int] | None = None) -> Path:
    """The photo model, in the stages of :func:`_stage` (2 and 3 start from ``init``), and
    ``code-priors``: the priors of ``levels`` (1-based; default 2 and 3) on the codes of
    whole training photos (:func:`hvqc.train.train_code_priors`; ``batch`` photos a step,
    no crops)."""
    settings = TrainSettings(steps=steps, seed=seed, init=init, device=device, seconds=seconds)
    config = photo_config()
    if levels is not None and stage != "code-priors":
        raise ValueError("--levels is for the code-priors stage (photo-code-priors) only")
    if stage == "code-priors":
        if freeze is not None or rate_weight is not None or device != "cpu":
            raise ValueError("the code-priors stage takes no --freeze, --rate-weight or --device")
        n = len(config.levels)
        levels = [2, 3] if levels is None else levels
        if not levels or len(set(levels)) != len(levels) or not all(1 <= lv <= n for lv in levels):
            raise ValueError(f"--levels must name distinct levels in 1..{n}, got "
                             f"{','.join(map(str, levels)) or 'none'}")
        settings.lr = 3e-4
        signals, count = _whole_photos([require(f) for f in PHOTO_FOLDERS], config.stride(len(config.levels) - 1))
        meta = {"data": ", ".join(PHOTO_FOLDERS), "images": count, "crop": "whole photos and their mirrors",
                "batch": batch, "command": command, "levels": sorted(levels)}
        return train_code_priors(config, signals, run_dir, settings, [lv - 1 for lv in sorted(levels)],
                                 batch, meta, progress)
    _stage(settings, stage, len(config.levels), freeze=freeze, rate_weight=rate_weight)
    folders = [require(f) for f in PHOTO_FOLDERS]      # after the options are checked
    sampler = CropSampler(folders, crop, seed + 1000 * _rank())
    meta = {"data": ", ".join(PHOTO_FOLDERS), "images": len(sampler), "crop": crop,
            "batch": batch, "command": command}
    return train(config, lambda step: sampler.sample(batch), msssim_mse, run_dir,
                 settings, meta, progress)


def train_mnist(run_dir: Path, steps: int, batch: int = 64, crop: int | None = None, seed: int = 0,
                progress: bool = True, command: str = "", init: str = "", stage: str = "all",
                freeze: int | None = None, device: str = "cpu", seconds: float = 0.0,
                rate_weight: float | None = None) -> Path:
    """HQA's digits model on the 60,000 MNIST training digits at 32x32, MSE loss."""
    settings = TrainSettings(steps=steps, seed=seed, init=init, ckpt_every=500, device=device,
                             seconds=seconds)
    config = mnist_config()
    _stage(settings, stage, len(config.levels), freeze=freeze, rate_weight=rate_weight)
    data, _ = mnist("train")
    sampler = TensorSampler(data, seed + 1000 * _rank())
    meta = {"data": "mnist train (60,000 digits, resized to 32x32)", "images": len(sampler),
            "batch": batch, "command": command, "stream": "joint", "sample_size": [32, 32]}
    return train(config, lambda step: sampler.sample(batch), mse, run_dir,
                 settings, meta, progress)


def train_faces(run_dir: Path, steps: int, batch: int = 32, crop: int | None = None, seed: int = 0,
                progress: bool = True, command: str = "", init: str = "", stage: str = "all",
                freeze: int | None = None, device: str = "cpu", seconds: float = 0.0,
                rate_weight: float | None = None) -> Path:
    """CelebA faces (64x64 centre crops, flips), SSIM + MSE loss."""
    settings = TrainSettings(steps=steps, seed=seed, init=init, ckpt_every=500, device=device,
                             seconds=seconds)
    config = faces_config()
    _stage(settings, stage, len(config.levels), top=3, freeze=freeze,   # its 4x4 level was weak too
           rate_weight=rate_weight)
    data = celeba("train")
    sampler = TensorSampler(data, seed + 1000 * _rank(), flip=True)
    meta = {"data": f"celeba 000001-004500 ({len(data)} faces, 64x64 centre crop); "
                    "004501-005000 held out", "images": len(sampler), "batch": batch, "command": command,
            "stream": "joint", "sample_size": [64, 64]}
    return train(config, lambda step: sampler.sample(batch), ssim_mse, run_dir,
                 settings, meta, progress)


def train_speech(run_dir: Path, steps: int, variant: str = "down+aux", batch: int = 16,
                 crop: int | None = None, seed: int = 0, progress: bool = True, command: str = "",
                 init: str = "", corpus: str | None = None, device: str = "cpu",
                 seconds: float = 0.0) -> Path:
    """The speech models: 80-band log-mel features (10 ms frames), 3 VQ levels of 256 codes.

    Data: the espeak-ng corpus (``runs/speech/corpus``: 1,500 train utterances, made if
    absent; its 100 test utterances are held out) plus the FSDD train takes (5-49),
    fixed random crops of ``crop`` = 128 frames (1.28 s), batch 16. Loss: MSE of the
    normalised features at the output (level 1), plus HQA's normalised latent MSE and
    the Gumbel/commitment and prior terms at every level. The variants of the study,
    same data, steps, optimiser and parameter count (:func:`hvqc.speech.speech_config`:
    a ``down=0`` level has the layers of a ``down=1`` one):

    - ``down+aux``: levels every 20/40/80 ms; each level above the first is also
      decoded down through the levels below to the features and given the same
      feature MSE (``signal_weight`` 0.5): an auxiliary loss at each low-resolution level.
    - ``aux-only``: same depth and the same per-level losses, all levels every 20 ms.
    - ``down-only``: levels every 20/40/80 ms, the feature loss only at the output;
      the upper levels learn only to reconstruct the latent below (HQA).
    """
    from .speech import VARIANTS, speech_config
    from .speech_data import CropSampler as FrameSampler, speech_corpus, train_features
    if variant not in VARIANTS:
        raise ValueError(f"unknown speech variant {variant!r} (known: {', '.join(VARIANTS)})")
    crop = crop or 128
    if crop % 8:
        raise ValueError(f"--crop must be a multiple of 8 frames for the speech model, got {crop}")
    root = speech_corpus(corpus)
    feats, info = train_features(root, Path(root) / "cache")
    sampler = FrameSampler(feats, crop, seed + 1000 * _rank())
    meta = {"modality": "speech", "variant": variant,
            "data": f"espeak-ng corpus {root} ({info['espeak_train']} train utterances, seed 0) + "
                    f"fsdd train takes 5-49 ({info['fsdd_train']} recordings); "
                    f"{crop}-frame crops", "utterances": len(sampler), "crop": crop,
            "batch": batch, "command": command}
    settings = TrainSettings(steps=steps, seed=seed, init=init, lr=5e-4, ckpt_every=500,
                             signal_weight=0.0 if variant == "down-only" else 0.5,
                             device=device, seconds=seconds)
    return train(speech_config(variant), lambda step: sampler.sample(batch, step), mse,
                 run_dir, settings, meta, progress)


RECIPES = {"speech": train_speech}
for _name, _fn in (("photo", train_photo), ("mnist", train_mnist), ("faces", train_faces)):
    RECIPES[_name] = _fn
    for _st in ("tune", "top", "upper", "priors", "decoder", "decode"):
        RECIPES[f"{_name}-{_st}"] = partial(_fn, stage=_st)
RECIPES["photo-code-priors"] = partial(train_photo, stage="code-priors")


def train_recipe(name: str, run_dir: Path, steps: int, **kw) -> Path:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return RECIPES[name](Path(run_dir), steps, **kw)
