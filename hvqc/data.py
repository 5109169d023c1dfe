"""Where the training and evaluation data live.

The data folder is ``$HVQC_DATA`` if set, else ``../shared/data`` beside the
repository checkout. Nothing is ever downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "require"]


def data_root() -> Path:
    env = os.environ.get("HVQC_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require(*parts: str) -> Path:
    """Path to a data sub-folder; FileNotFoundError with a one-line reason if absent."""
    p = data_root().joinpath(*parts)
    if not p.exists():
        raise FileNotFoundError(f"data folder not found: {p} (set HVQC_DATA)")
    return p
