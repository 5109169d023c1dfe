"""The model registry: name -> weights file, pinned by sha256 and verified on every load.

``weights/manifest.json`` lists each shipped model: its file, sha256, what it was
trained on and how, and the typical rate of each level. A weights file is
safetensors; its metadata holds the model config, so the model rebuilds from the
file alone. ``$HVQC_WEIGHTS`` points at another weights folder (same layout).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .hierarchy import HierarchicalVQVAE, HierarchyConfig

__all__ = ["ModelError", "LoadedModel", "weights_dir", "manifest", "verify", "load", "save_weights",
           "DEFAULT_MODEL"]

DEFAULT_MODEL = "photo"


class ModelError(ValueError):
    """A model that is unknown, missing, or whose weights fail verification."""


@dataclass
class LoadedModel:
    """A verified model ready for coding.

    Attributes:
        name: stable model id (written into every file).
        sha256: hex digest of the weights file.
        model: the float32 network, its 2-D convolutions' weights stored channels-last
            (:func:`load`).
        model64: a float64 copy used wherever a computation feeds the entropy coder.
        modality: "image" or "speech".
        info: the manifest entry.
    """

    name: str
    sha256: str
    model: HierarchicalVQVAE
    model64: HierarchicalVQVAE
    modality: str
    info: dict

    @property
    def hash_prefix(self) -> bytes:
        return bytes.fromhex(self.sha256[:8])


def weights_dir() -> Path:
    env = os.environ.get("HVQC_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "weights"


def manifest() -> dict:
    """The parsed manifest (``{"models": {name: entry}}``); empty if none is installed."""
    p = weights_dir() / "manifest.json"
    if not p.exists():
        return {"models": {}}
    try:
        man = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"weights manifest {p} is unreadable: {e}") from None
    models = man.get("models") if isinstance(man, dict) else None
    if not isinstance(models, dict):
        raise ModelError(f"weights manifest {p} is malformed: no \"models\" object")
    for name, entry in models.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("sha256"), str)):
            raise ModelError(f"weights manifest {p} is malformed: model {name!r} needs "
                             f"\"file\" and \"sha256\"")
    return man


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def from_state(config: dict, state: dict[str, torch.Tensor]) -> HierarchicalVQVAE:
    """Rebuild a model from its config dict and state; strict."""
    model = HierarchicalVQVAE(HierarchyConfig.from_dict(config))
    model.load_state_dict(state, strict=True)
    return model.eval()


@lru_cache(maxsize=8)
def load(name: str = DEFAULT_MODEL) -> LoadedModel:
    """Load a shipped model by name, verifying its sha256 against the manifest."""
    models = manifest()["models"]
    if name not in models:
        known = ", ".join(sorted(models)) or "none installed"
        raise ModelError(f"unknown model {name!r} (known: {known})")
    entry = models[name]
    path, digest = verify(name, entry)
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
        # Channels-last weights make every 2-D convolution run channels-last (oneDNN's
        # fast layout on the CPU): the photo model decodes Kodak about 25 % faster at
        # levels 2-3. Only float rounding changes; the coder's inputs come from model64.
        model = from_state(json.loads(meta["config"]), state).to(memory_format=torch.channels_last)
        model64 = from_state(json.loads(meta["config"]), state).double()
    except Exception as e:  # noqa: BLE001 - a verified file that still does not load
        raise ModelError(f"weights for model {name!r} do not load ({path}): "
                         f"{type(e).__name__}: {e}") from e
    return LoadedModel(name, digest, model, model64, meta.get("modality", "image"), entry)


def verify(name: str, entry: dict) -> tuple[Path, str]:
    """Check a manifest entry's weights file exists and matches its sha256.

    Returns:
        ``(path, sha256 hex digest)``.

    Raises:
        ModelError: If the file is missing, unreadable or fails verification.
    """
    path = weights_dir() / entry["file"]
    if not path.is_file():
        raise ModelError(f"weights for model {name!r} missing: {path}")
    try:
        digest = sha256_file(path)
    except OSError as e:
        raise ModelError(f"weights for model {name!r} unreadable: {path}: {e.strerror or e}") from None
    if digest != entry["sha256"]:
        raise ModelError(f"weights for model {name!r} fail verification: sha256 {digest[:12]}... "
                         f"!= manifest {entry['sha256'][:12]}...")
    return path, digest


def save_weights(model: HierarchicalVQVAE, path: Path, modality: str, extra: dict | None = None,
                 half: bool = False) -> str:
    """Write a model as safetensors with its config in the metadata; returns the sha256.

    With ``half``, parameters are stored as float16 (buffers keep their dtype); the
    shipped model is then the float16 one, widened exactly on load.
    """
    params = {k for k, _ in model.named_parameters()}
    state = {k: (v.detach().half() if half and k in params else v.detach()).contiguous()
             for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(model.config.to_dict()), "modality": modality,
            "format": "hvqc-weights-1"}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    save_file(state, str(path), metadata=meta)
    return sha256_file(path)
