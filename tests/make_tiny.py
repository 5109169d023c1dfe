"""Regenerate the tiny test models in tests/data/weights (random weights, seed 0).

The tiny models are not trained: they exist so that codec, container and CLI tests
run in seconds and the golden bitstreams do not depend on the shipped models.

- ``tiny``: RGB, 3 levels at strides 4/8/16, split streams (like ``photo``).
- ``tiny-gray``: gray, 3 levels halving down to a 1x1 top for 8x8 inputs, joint
  stream by default (like ``mnist``).
- ``tiny-speech``: speech (1-D, 80 log-mel channels), 3 levels every 20/40/80 ms
  (like ``speech``).

Run: python tests/make_tiny.py [NAME ...]  (default: all; a change to a model's
output changes the golden files; safetensors metadata order is not reproducible,
so regenerate only the model you mean to change).
"""
import json
import sys
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


def tiny_gray_config() -> HierarchyConfig:
    levels = [LevelSpec(codes=16, dim=8, hidden=16, down=1, blocks=1, prior_hidden=16, prior_blocks=1)
              for _ in range(3)]
    levels[-1].prior_phase = 1
    return HierarchyConfig(dims=2, channels=1, levels=levels)


def tiny_speech_config() -> HierarchyConfig:
    return HierarchyConfig(dims=1, channels=80, levels=[
        LevelSpec(codes=32, dim=8, hidden=16, down=1, blocks=1, prior_hidden=16, prior_blocks=1)
        for _ in range(3)])


MODELS = {"tiny": (tiny_config, {"colour_log_slope": 0.1}),
          "tiny-gray": (tiny_gray_config, {"stream": "joint", "sample_size": [8, 8], "colour_log_slope": 0.1}),
          "tiny-speech": (tiny_speech_config, {"modality": "speech"})}


if __name__ == "__main__":
    out = Path(__file__).parent / "data" / "weights"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    man = json.loads(path.read_text()) if path.exists() else {"models": {}}
    for name in sys.argv[1:] or MODELS:
        make, extra = MODELS[name]
        extra = dict(extra)
        modality = extra.pop("modality", "image")
        torch.manual_seed(0)
        model = HierarchicalVQVAE(make()).eval()
        digest = save_weights(model, out / f"{name}.safetensors", modality, {"name": name}, half=True)
        cfg = model.config
        man["models"][name] = {
            "file": f"{name}.safetensors", "sha256": digest, "modality": modality,
            "description": "untrained test model (random weights, seed 0)", **extra,
            "levels": [{"level": i + 1, "stride": cfg.stride(i), "codes": lv.codes, "typical_bpp": None}
                       for i, lv in enumerate(cfg.levels)]}
        print(name, digest)
    path.write_text(json.dumps(man, indent=2) + "\n")
