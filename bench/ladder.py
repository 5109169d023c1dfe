"""Derive ``hvqc-rd``'s lambda ladder from training photos, never from Kodak.

    python bench/ladder.py [--model photo] [--images DIR] [--every N] [--count 13]
                           [-o bench/results/ladder.json]

Each photo's cuts (every level and refinement, as its file would be written) are scored
once (:func:`hvqc.codec.scored_cuts`, no search); every lambda of a fine log grid picks one
per photo (:func:`hvqc.codec.pick_rd`), which gives the mean whole-file bpp as a function
of lambda. The ladder keeps the two end slopes and places the others where that mean bpp
is evenly spaced in log between the ends, so the benchmark's points are evenly spread on
its log-bpp axis instead of bunching where the slope moves few picks
(:func:`hvqc.analysis.rd.log_spaced_settings`). The default photos are BSDS500's test
split, 200 photos in the training pool; about 8 minutes on 2 threads.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hvqc.analysis.rd import log_spaced_settings
from hvqc.bench import list_images
from hvqc.codec import pick_rd, scored_cuts
from hvqc.data import data_root
from hvqc.image import load_image
from hvqc.runtime import tune_allocator
from hvqc.zoo import load

ENDS = (0.5, 45.0)      # the ladder's ends: level 1 on every photo; level 3 and beyond


def _round(lam: float) -> float:
    """Two significant digits: a ladder a person can read and type."""
    return float(f"{lam:.2g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="photo")
    ap.add_argument("--images", type=Path, default=None, help="default: BSDS500's test split")
    ap.add_argument("--every", type=int, default=1, help="take every Nth photo of the folder")
    ap.add_argument("--count", type=int, default=13, help="slopes in the ladder, ends included")
    ap.add_argument("-o", "--output", type=Path, default=Path("bench/results/ladder.json"))
    args = ap.parse_args()
    tune_allocator()
    folder = args.images or data_root() / "bsds500" / "test"
    files = list_images(folder)[:: args.every]
    lm = load(args.model)
    grid = np.geomspace(ENDS[0], ENDS[1], 241)
    bits = np.zeros((len(files), len(grid)))
    for i, f in enumerate(files):
        img = load_image(f)
        pixels = img.width * img.height
        cuts = scored_cuts(lm, img)
        for j, lam in enumerate(grid):
            bits[i, j] = 8 * len(pick_rd(cuts, float(lam), pixels)[0]) / pixels
        print(f"{f.name}: {bits[i, 0]:.4f} .. {bits[i, -1]:.4f} bpp", flush=True)
    curve = bits.mean(0)                           # mean bpp, falling as lambda grows
    ladder = [_round(lam) for lam in log_spaced_settings(grid, curve, args.count)]
    targets = np.geomspace(curve[0], curve[-1], args.count)
    try:
        where = str(folder.resolve().relative_to(data_root().resolve()))
    except ValueError:
        where = folder.name
    result = {"model": args.model, "weights_sha256": lm.sha256, "images": where,
              "count": len(files), "ladder": ladder,
              "target_bpp": [round(float(t), 5) for t in targets],
              "curve": [{"lambda": round(float(lam), 4), "bpp": round(float(b), 5)}
                        for lam, b in zip(grid, curve)]}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print("ladder:", ", ".join(f"{lam:g}" for lam in ladder))


if __name__ == "__main__":
    main()
