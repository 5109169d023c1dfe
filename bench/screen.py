"""The screen of ``hvqc encode --lambda --search``: which levels it searches, what it costs.

    python bench/screen.py [--model photo] [--images DIR] [--every 20] [--count 10]
                           [--lambdas 0.5,1.3,1.8,4.5,8.4,13,45] [-o bench/results/screen.json]

For each photo (default: every 20th of BSDS500's test split, 10 photos; training photos,
never Kodak) and slope, in one process:

- ``every level``: :func:`hvqc.codec.scored_cuts` with every level's codes searched for
  the slope (what ``--lambda --search`` did before the screen), timed;
- ``screened``: :func:`hvqc.codec.screened_cuts`, the encoder's path now (every level
  written whole from the encoder's codes and scored; only the levels whose plain cost
  is within ``SCREEN_MARGIN`` of the best level's, ``SCREEN_MARGIN_TOP`` for the top
  level, are searched), timed.

Both leave out the refinement search that follows a refinement pick (the same in both).
The JSON holds, per encode, both picks and times, and the size and cost of every plain
whole level and every searched cut. Worked out from the same scores: ``margins`` gives,
for each of a range of margins used for every level, the levels searched an encode and
the encodes whose pick differs from searching every level; ``top_margins`` the same for
a range of top-level margins, the other levels at ``SCREEN_MARGIN``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from hvqc import codec
from hvqc.bench import list_images
from hvqc.codec import pick_rd, rd_cost, scored_cuts, screen_levels, screened_cuts
from hvqc.data import data_root
from hvqc.image import load_image
from hvqc.runtime import tune_allocator
from hvqc.search import SearchSettings
from hvqc.zoo import load

MARGINS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2)
TOP_MARGINS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="photo")
    ap.add_argument("--images", type=Path, default=None, help="default: BSDS500's test split")
    ap.add_argument("--every", type=int, default=20, help="take every Nth photo of the folder")
    ap.add_argument("--count", type=int, default=10, help="at most this many photos")
    ap.add_argument("--lambdas", default="0.5,1.3,1.8,4.5,8.4,13,45")
    ap.add_argument("--steps", type=int, default=10, help="search steps")
    ap.add_argument("-o", "--output", type=Path, default=Path("bench/results/screen.json"))
    args = ap.parse_args()
    tune_allocator()
    lams = [float(v) for v in args.lambdas.split(",")]
    folder = args.images or data_root() / "bsds500" / "test"
    files = list_images(folder)[:: args.every][: args.count]
    lm = load(args.model)
    encodes, scored = [], []          # scored: (lambda, pixels, whole levels, every level's cuts)
    for f in files:
        img = load_image(f)
        pixels = img.width * img.height
        for lam in lams:
            s = SearchSettings(steps=args.steps, lam=lam)
            t = time.perf_counter()
            every = scored_cuts(lm, img, search=s)
            t_every = time.perf_counter() - t
            t = time.perf_counter()
            screened = screened_cuts(lm, img, lam, search=s)
            t_screened = time.perf_counter() - t
            whole = screened[: len(codec.searchable_levels(lm))]
            scored.append((lam, pixels, whole, every))
            row = lambda c: [len(c[0]), c[1], c[2], rd_cost(c, lam, pixels)]   # noqa: E731
            pick_every, pick_screened = pick_rd(every, lam, pixels), pick_rd(screened, lam, pixels)
            enc = {"image": f.name, "lambda": lam, "pixels": pixels,
                   "every_level_s": t_every, "screened_s": t_screened,
                   "every_level_pick": list(pick_every[1:]),
                   "screened_pick": list(pick_screened[1:]),
                   "screened_levels": sorted({c[1] for c in screened[len(whole):]}),
                   "plain_whole_cost": {str(c[1]): rd_cost(c, lam, pixels) for c in whole},
                   "plain_whole_cuts": [row(c) for c in whole],
                   "every_level_cuts": [row(c) for c in every],
                   "same_pick": pick_every == pick_screened}
            encodes.append(enc)
            print(f"{f.name} lambda {lam:g}: every level {t_every:.2f} s, screened {t_screened:.2f} s "
                  f"(levels {enc['screened_levels']}), same pick: {enc['same_pick']}", flush=True)
    n = len(encodes)

    def sweep(margin: float, top_margin: float) -> dict:
        """What one screen would search and pick, from the same scores."""
        searched = unlike = 0
        for lam, pixels, whole, every in scored:
            chosen = screen_levels(whole, lam, pixels, margin, top_margin)
            searched += len(chosen)
            pick = pick_rd(whole + [c for c in every if c[1] in chosen], lam, pixels)
            unlike += pick != pick_rd(every, lam, pixels)
        return {"levels_searched_per_encode": searched / n, "picks_unlike_every_level": unlike}

    margins = {f"{m:g}": sweep(m, m) for m in MARGINS}
    top_margins = {f"{m:g}": sweep(codec.SCREEN_MARGIN, m) for m in TOP_MARGINS}
    out = {"model": args.model, "weights": lm.sha256[:8], "images": [f.name for f in files],
           "folder": str(folder.relative_to(data_root())) if folder.is_relative_to(data_root()) else str(folder),
           "lambdas": lams, "search_steps": args.steps, "screen_margin": codec.SCREEN_MARGIN,
           "screen_margin_top": codec.SCREEN_MARGIN_TOP,
           "threads": torch.get_num_threads(),
           "machine": {"platform": platform.platform(), "torch": torch.__version__},
           "summary": {"encodes": n,
                       "every_level_s_mean": sum(e["every_level_s"] for e in encodes) / n,
                       "screened_s_mean": sum(e["screened_s"] for e in encodes) / n,
                       "levels_searched_per_encode": sum(len(e["screened_levels"]) for e in encodes) / n,
                       "same_pick": sum(e["same_pick"] for e in encodes)},
           "margins": margins, "top_margins": top_margins, "encodes": encodes}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"]), json.dumps(margins), json.dumps(top_margins))


if __name__ == "__main__":
    main()
