"""Regenerate the tiny test model in tests/data/weights (random weights, seed 0).

The tiny model is not trained: it exists so that codec, container and CLI tests
run in seconds and the golden bitstream does not depend on the shipped model.
Run: python tests/make_tiny.py  (a change to its output changes the golden files)
"""
import json
from pathlib import Path

import torch

from hvqc.hierarchy import HierarchicalVQVAE, HierarchyConfig, LevelSpec
from hvqc.zoo import save_weights


def tiny_config() -> HierarchyConfig:
    return HierarchyConfig(dims=2, channels=3, levels=[
        LevelSpec(codes=32, dim=8, hidden=16, down=2, blocks=1, prior_hidden=16, prior_blocks=1),
        LevelSpec(codes=16, dim=8, hidden=16, down=1, blocks=1, prior_hidden=16, prior_blocks=1),
        LevelSpec(codes=16, dim=8, hidden=16, down=1, blocks=1, prior_hidden=16, prior_blocks=1),
    ])


if __name__ == "__main__":
    torch.manual_seed(0)
    model = HierarchicalVQVAE(tiny_config()).eval()
    out = Path(__file__).parent / "data" / "weights"
    out.mkdir(parents=True, exist_ok=True)
    digest = save_weights(model, out / "tiny.safetensors", "image", {"name": "tiny"}, half=True)
    cfg = model.config
    man = {"models": {"tiny": {
        "file": "tiny.safetensors", "sha256": digest, "modality": "image",
        "description": "untrained test model (random weights, seed 0)",
        "levels": [{"level": i + 1, "stride": cfg.stride(i), "codes": lv.codes, "typical_bpp": None}
                   for i, lv in enumerate(cfg.levels)]}}}
    (out / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    print(digest)
