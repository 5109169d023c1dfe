"""Shared fixtures: the tiny test model, a small photo, and a CLI runner.

``HVQC_WEIGHTS`` is pointed at the tiny model's folder at import time, before any
test can call :func:`hvqc.zoo.load`, so in-process code and CLI subprocesses both
see the tiny model and never the shipped ones (except the tests that ask for
``photo_weights``, which run the CLI against the repository's ``weights/``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
TINY_WEIGHTS = DATA / "weights"
SHIPPED_WEIGHTS = ROOT / "weights"
PHOTO = DATA / "photo96x64.png"

os.environ["HVQC_WEIGHTS"] = str(TINY_WEIGHTS)

# The test tensors are tiny: extra threads only add scheduling overhead (and stall
# badly on a busy machine). Tests about thread counts set them explicitly.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    """The tiny untrained model (a :class:`hvqc.zoo.LoadedModel`)."""
    from hvqc import zoo
    zoo.load.cache_clear()          # nothing loaded before the env var was set may linger
    lm = zoo.load("tiny")
    assert lm.name == "tiny" and lm.model.num_levels == 3
    return lm


@pytest.fixture(scope="session")
def plain():
    """``plain(data)``: a file less the extras of its finest cut (its colour correction,
    :mod:`hvqc.colour`), which is what cutting it coarser keeps and what decodes to the
    model's decoding alone."""
    from hvqc import bitstream

    def strip(data: bytes) -> bytes:
        c = bitstream.read(data)
        return bitstream.write(replace(c, extras=bitstream.without_cut_tags(c.extras)))
    return strip


@pytest.fixture(scope="session")
def photo_path() -> Path:
    return PHOTO


@pytest.fixture
def photo_img() -> Image.Image:
    """The 96x64 RGB test photo, loaded fresh for each test."""
    img = Image.open(PHOTO)
    img.load()
    return img.convert("RGB")


def _cli_env(weights: Path | None) -> dict:
    env = dict(os.environ)
    env.pop("HVQC_DEBUG", None)
    if weights is None:
        env.pop("HVQC_WEIGHTS", None)
    else:
        env["HVQC_WEIGHTS"] = str(weights)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(*args, cwd: Path | None = None, weights: Path | None = TINY_WEIGHTS,
            timeout: float = 240) -> tuple[int, str, str]:
    """Run ``python -m hvqc.cli ARGS`` in a fresh interpreter; returns (rc, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "hvqc.cli", *map(str, args)],
                          cwd=str(cwd or ROOT), env=_cli_env(weights), capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def cli():
    """``cli(*args, cwd=None, weights=<tiny folder>)`` -> ``(rc, stdout, stderr)``.

    Runs the real command line in a subprocess, so exit codes and stderr are what a
    user sees. ``weights`` is the folder ``HVQC_WEIGHTS`` points at (None: unset).
    """
    return run_cli


@pytest.fixture(scope="session")
def photo_weights() -> Path:
    """The weights folder holding the shipped model "photo" (``weights/``); skips the
    test when that model is not installed there yet."""
    man = SHIPPED_WEIGHTS / "manifest.json"
    if not man.exists():
        pytest.skip("shipped model 'photo' not installed (weights/manifest.json missing)")
    try:
        models = json.loads(man.read_text()).get("models", {})
    except (OSError, ValueError) as e:
        pytest.skip(f"weights/manifest.json unreadable ({e}); shipped model 'photo' unavailable")
    if "photo" not in models:
        pytest.skip("shipped model 'photo' not in weights/manifest.json yet")
    if not (SHIPPED_WEIGHTS / models["photo"]["file"]).exists():
        pytest.skip(f"weights file for 'photo' missing: weights/{models['photo']['file']}")
    return SHIPPED_WEIGHTS
