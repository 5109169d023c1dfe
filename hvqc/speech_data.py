"""Training and evaluation data of the speech models: features of the espeak-ng corpus
(:func:`hvqc.corpus.make_corpus`) and of the Free Spoken Digit Dataset, and a seeded
sampler of fixed-length frame crops."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from .audio import load_mono
from .corpus import corpus_items, fsdd_items, make_corpus
from .speech import FEATURE_FLOOR, FEATURE_MEAN, FEATURE_STD, features

__all__ = ["DEFAULT_CORPUS", "CORPUS_TRAIN", "CORPUS_TEST", "speech_corpus", "feature_set",
           "CropSampler"]

DEFAULT_CORPUS = Path("runs") / "speech" / "corpus"
CORPUS_TRAIN, CORPUS_TEST, CORPUS_SEED = 1500, 100, 0


def speech_corpus(root: str | Path | None = None) -> Path:
    """The espeak-ng corpus folder (``$HVQC_SPEECH_CORPUS`` or ``runs/speech/corpus``),
    synthesized (1,500 train + 100 test utterances, seed 0) if it does not exist yet."""
    root = Path(root or os.environ.get("HVQC_SPEECH_CORPUS") or DEFAULT_CORPUS)
    if not (root / "index.json").exists():
        make_corpus(root, CORPUS_TRAIN, CORPUS_TEST, CORPUS_SEED, progress=True)
    return root


def feature_set(paths: list[Path], cache: Path | None = None) -> list[torch.Tensor]:
    """Normalised features ``[80, T]`` of each WAV (mono, 16 kHz), cached in ``cache``."""
    key = hashlib.sha256("\n".join(str(p) for p in paths).encode()
                         + f"{FEATURE_FLOOR} {FEATURE_MEAN} {FEATURE_STD}".encode()).hexdigest()[:16]
    if cache is not None:
        f = Path(cache) / f"features-{key}.pt"
        if f.exists():
            return torch.load(f, weights_only=True)
    feats = [features(load_mono(p)).half() for p in paths]
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        torch.save(feats, f)
    return feats


def train_features(corpus: Path, cache: Path | None = None) -> tuple[list[torch.Tensor], dict]:
    """Features of the corpus's train split plus the FSDD train takes (5-49)."""
    items = [i.path for i in corpus_items(corpus, "train")]
    digits = [i.path for i in fsdd_items("train")]
    info = {"espeak_train": len(items), "fsdd_train": len(digits)}
    return feature_set(items + digits, cache), info


class CropSampler:
    """Batches of ``crop``-frame windows ``[B, 80, crop]``: utterances drawn uniformly,
    windows at uniform offsets (shorter utterances padded with silence at the end),
    from a generator seeded by ``(seed, step)``, so the crops of each step are fixed."""

    def __init__(self, feats: list[torch.Tensor], crop: int, seed: int = 0):
        self.feats, self.crop, self.seed = feats, crop, seed
        self.floor = float((np.log(FEATURE_FLOOR) - FEATURE_MEAN) / FEATURE_STD)

    def __len__(self) -> int:
        return len(self.feats)

    def sample(self, batch: int, step: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, step])
        out = torch.full((batch, self.feats[0].shape[0], self.crop), self.floor)
        for b, i in enumerate(rng.integers(0, len(self.feats), batch)):
            f = self.feats[i]
            t = f.shape[-1]
            start = int(rng.integers(0, max(t - self.crop, 0) + 1))
            w = f[:, start:start + self.crop].float()
            out[b, :, : w.shape[-1]] = w
        return out
