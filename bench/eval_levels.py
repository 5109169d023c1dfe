"""Rate and quality of every level of a shipped model on an image folder (default: Kodak).

    python bench/eval_levels.py [--model photo] [--images DIR] [--search STEPS]
                                [-o bench/results/photo_kodak.json]

Writes per-image and mean whole-file bpp, PSNR (RGB, 8-bit), MS-SSIM (RGB, data_range 1),
encode and decode seconds, and payload vs -log2 p bits, per level. With ``--search``,
each level's codes are searched (``hvqc encode --search``; the levels the model allows),
and the results go to ``<model>_<images>_search<STEPS>.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from hvqc.analysis.metrics import as_float_rgb, bpp, ms_ssim, psnr
from hvqc.api import decompress
from hvqc.codec import compress_image, searchable_levels
from hvqc.data import data_root
from hvqc.image import load_image
from hvqc.publish import record_rates
from hvqc.runtime import tune_allocator
from hvqc.search import SearchSettings
from hvqc.zoo import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="photo")
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("-o", "--output", type=Path, default=None)
    ap.add_argument("--update-manifest", action="store_true",
                    help="record each level's mean bpp as its typical rate in weights/manifest.json")
    ap.add_argument("--search", type=int, default=0, help="search each level's codes for STEPS steps")
    args = ap.parse_args()
    tune_allocator()                                   # as the hvqc command does
    if args.search and args.update_manifest:
        ap.error("--update-manifest records the plain encoder's rates: leave out --search")
    folder = args.images or data_root() / "kodak"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    lm = load(args.model)
    n = lm.model.num_levels
    search = SearchSettings(steps=args.search)
    levels = searchable_levels(lm) if args.search else range(1, n + 1)
    rows = []
    for f in files:
        img = load_image(f)
        ref = as_float_rgb(img)
        for level in levels:
            t = time.perf_counter()
            res = compress_image(lm, img, level, search=search)
            t_enc = time.perf_counter() - t
            t = time.perf_counter()
            out = decompress(res.data, model=lm)
            t_dec = time.perf_counter() - t
            rec = as_float_rgb(out)
            rows.append({"image": f.name, "level": level, "bytes": len(res.data),
                         "bpp": bpp(len(res.data), img.width, img.height),
                         "payload_bytes": sum(res.payload_bytes),
                         "estimated_bits": sum(res.estimated_bits),
                         "psnr": psnr(rec, ref), "ms_ssim": ms_ssim(rec, ref),
                         "encode_s": t_enc, "decode_s": t_dec})
            print(json.dumps(rows[-1]), flush=True)
    mean = []
    for level in levels:
        r = [x for x in rows if x["level"] == level]
        m = {k: sum(x[k] for x in r) / len(r) for k in
             ("bpp", "psnr", "ms_ssim", "encode_s", "decode_s", "bytes")}
        m["payload_over_estimate"] = (8 * sum(x["payload_bytes"] for x in r)
                                      / sum(x["estimated_bits"] for x in r) - 1)
        mean.append({"level": level, **m})
    result = {"model": args.model, "weights_sha256": lm.sha256, "images": str(folder.name),
              "count": len(files), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
              "search_steps": args.search, "levels": mean, "per_image": rows}
    tag = f"_search{args.search}" if args.search else ""
    out = args.output or Path("bench/results") / f"{args.model}_{folder.name}{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if args.update_manifest:
        record_rates(args.model, [m["bpp"] for m in mean], evaluation={
            "data": f"{folder.name} ({len(files)} images)", "results": str(out),
            "levels": [{k: round(v, 4) for k, v in m.items() if k != "bytes"} for m in mean]})
    for m in mean:
        print(f"level {m['level']}: {m['bpp']:.4f} bpp  PSNR {m['psnr']:.2f}  MS-SSIM {m['ms_ssim']:.4f}"
              f"  enc {m['encode_s']:.2f}s dec {m['decode_s']:.2f}s")


if __name__ == "__main__":
    main()
