"""Publish a training checkpoint as a shipped model: float16 safetensors + manifest entry."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .zoo import from_state, manifest, save_weights, weights_dir

__all__ = ["publish", "record_rates"]


def _wall_seconds(log: Path) -> int | None:
    """Training seconds from the last line of a run's log (``... 1234s``; a resumed run
    counts from its last start)."""
    try:
        last = log.read_text().strip().splitlines()[-1]
        return int(last.rsplit(" ", 1)[-1].rstrip("s"))
    except (OSError, IndexError, ValueError):
        return None


def publish(run: Path, name: str, description: str = "", force: bool = False) -> dict:
    """Write ``weights/<name>.safetensors`` from ``run/ckpt.pt`` and record it in the manifest.

    Weights are stored in float16 (the shipped model *is* the float16 one: loading
    widens them exactly, so files coded with it decode bit-exactly).
    """
    ck = torch.load(Path(run) / "ckpt.pt", map_location="cpu", weights_only=True)
    model = from_state(ck["config"], ck["model"])
    out_dir = weights_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    meta = ck.get("meta", {})
    digest = save_weights(model, path, meta.get("modality", "image"),
                          {"name": name, "step": ck["step"]}, half=True)
    cfg = model.config
    speech = meta.get("modality") == "speech"
    man = manifest()
    old = man["models"].get(name, {})
    entry = {
        "file": path.name, "sha256": digest, "modality": meta.get("modality", "image"),
        "description": description or old.get("description", ""),
        "parameters": sum(p.numel() for p in model.parameters()),
        "levels": [{"level": i + 1, "stride": cfg.stride(i), "codes": lv.codes,
                    **({"frame_ms": 10 * cfg.stride(i), "typical_bps": None} if speech
                       else {"typical_bpp": None})} for i, lv in enumerate(cfg.levels)],
        "training": {"steps": ck["step"], "settings": ck.get("settings", {}), **meta},
    }
    seconds = _wall_seconds(Path(run) / "log.txt")
    if seconds is not None:
        entry["training"]["wall_seconds"] = seconds
    for key in ("stream", "sample_size", "descent", "colour_log_slope"):   # coding defaults chosen before
        if key in meta or key in old:
            entry[key] = meta.get(key, old.get(key))
    for lv_old, lv in zip(old.get("levels", []), entry["levels"]):
        for key in ("typical_bpp", "typical_bps"):
            if key in lv:
                lv[key] = lv_old.get(key)
    man["models"][name] = entry
    (out_dir / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    return entry


def record_rates(name: str, rates: list[float], key: str = "typical_bpp",
                 evaluation: dict | None = None) -> None:
    """Record each level's measured mean rate (``rates[level - 1]``) as its typical rate
    in the manifest, which ``hvqc models`` lists and ``--bpp`` documents; ``evaluation``
    (data, results file, per-level means) is stored beside it."""
    path = weights_dir() / "manifest.json"
    man = json.loads(path.read_text())
    entry = man["models"][name]
    if len(rates) != len(entry["levels"]):
        raise ValueError(f"{name} has {len(entry['levels'])} levels, got {len(rates)} rates")
    for lv in entry["levels"]:
        lv[key] = round(rates[lv["level"] - 1], 4)
    if evaluation is not None:
        entry["evaluation"] = evaluation
    path.write_text(json.dumps(man, indent=2) + "\n")
