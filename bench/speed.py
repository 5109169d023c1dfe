"""Encode and decode time of hvqc against CompressAI's bmshj2018-factorized, same run.

    python bench/speed.py [--model photo] [--images DIR] [--limit N] [--threads T]
                          [--peer CHECKPOINT] [--search STEPS] [-o bench/results/speed.json]

Each image is timed in turn, in this order: hvqc ``compress_image`` and
``decompress`` (every level, whole file, header and checksum included) and the peer's
``compress`` and ``decompress`` (CompressAI's own entropy coder, input padded to a
multiple of 64 as its evaluation does), each ``--repeats`` times, keeping the median.
Both run in the same process with the same ``torch`` thread count and, as under the
``hvqc`` command, glibc's allocator tuned (:func:`hvqc.runtime.tune_allocator`). With ``--search``,
hvqc is also timed with its codes searched (``hvqc encode --search``) at every level
the model allows (decoding such a file costs what any file of its level costs).

The peer is bmshj2018-factorized at CompressAI's quality 1-5 size (N=128, M=192). With
``--peer`` it is loaded from a local checkpoint; without it, it is built untrained (no
weights can be downloaded here) with ``update()``-built tables: the network costs the
same, but its entropy coder codes whatever symbols untrained transforms produce, so the
JSON records which one was timed. hvqc's networks run with channels-last weights
(:func:`hvqc.zoo.load`); the peer is timed twice, as CompressAI runs it and with the
same channels-last weights (``bmshj2018-factorized-channels-last``), so the JSON says
how much of the comparison that layout is.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from hvqc.analysis.metrics import as_float_rgb
from hvqc.api import decompress
from hvqc.codec import compress_image, searchable_levels
from hvqc.data import data_root
from hvqc.image import load_image
from hvqc.runtime import tune_allocator
from hvqc.search import SearchSettings
from hvqc.zoo import load


PEER, PEER_CL = "bmshj2018-factorized", "bmshj2018-factorized-channels-last"


def peer_model(checkpoint: Path | None):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        from compressai.models import FactorizedPrior
        from compressai.zoo import load_state_dict
    if checkpoint is None:
        torch.manual_seed(0)
        net = FactorizedPrior(128, 192)
    else:
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        net = FactorizedPrior.from_state_dict(load_state_dict(ck.get("state_dict", ck)))
    net.eval().update(force=True)
    return net


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="photo")
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=6, help="first N images (sorted)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peer", type=Path, default=None)
    ap.add_argument("--search", type=int, default=0, help="also time hvqc with STEPS of search")
    ap.add_argument("-o", "--output", type=Path, default=Path("bench/results/speed.json"))
    args = ap.parse_args()
    tuned = tune_allocator()                           # as the hvqc command does
    torch.set_num_threads(args.threads)
    from compressai.ops import compute_padding

    folder = args.images or data_root() / "kodak"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")[: args.limit]
    lm = load(args.model)
    net = peer_model(args.peer)
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    n = lm.model.num_levels
    search = SearchSettings(steps=args.search)
    searched = searchable_levels(lm) if args.search else []
    compress_image(lm, load_image(files[0]), 1)          # warm-up (allocations, tables)
    rows = []
    for f in files:
        img = load_image(f)
        row = {"image": f.name, "pixels": img.width * img.height}
        for level in range(1, n + 1):
            t_enc, res = timed(lambda: compress_image(lm, img, level), args.repeats)
            t_dec, _ = timed(lambda: decompress(res.data, model=lm), args.repeats)
            row[f"hvqc_L{level}"] = {"encode_s": t_enc, "decode_s": t_dec,
                                     "bpp": 8 * len(res.data) / row["pixels"]}
        for level in searched:
            t_enc, res = timed(lambda: compress_image(lm, img, level, search=search), args.repeats)
            t_dec, _ = timed(lambda: decompress(res.data, model=lm), args.repeats)
            row[f"hvqc_L{level}_search{args.search}"] = {"encode_s": t_enc, "decode_s": t_dec,
                                                          "bpp": 8 * len(res.data) / row["pixels"]}
        x = as_float_rgb(img).float()
        pad, _ = compute_padding(*x.shape[2:], min_div=64)
        xp = F.pad(x, pad, mode="constant", value=0)
        for name, peer in ((PEER, net), (PEER_CL, net_cl)):
            t_enc, out = timed(lambda: peer.compress(xp), args.repeats)
            t_dec, _ = timed(lambda: peer.decompress(out["strings"], out["shape"]), args.repeats)
            row[name] = {"encode_s": t_enc, "decode_s": t_dec}
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = ([f"hvqc_L{l}" for l in range(1, n + 1)] + [f"hvqc_L{l}_search{args.search}" for l in searched]
            + [PEER, PEER_CL])
    mean = {k: {m: statistics.mean(r[k][m] for r in rows) for m in ("encode_s", "decode_s")}
            for k in keys}

    def verdict(peer: dict) -> dict:
        return {k: {"encode_faster": mean[k]["encode_s"] < peer["encode_s"],
                    "decode_faster": mean[k]["decode_s"] < peer["decode_s"]}
                for k in keys if k not in (PEER, PEER_CL)}
    result = {"model": args.model, "images": [f.name for f in files], "threads": args.threads,
              "repeats": args.repeats, "search_steps": args.search, "statistic": "median of repeats, mean over images",
              "peer": {"arch": "bmshj2018-factorized", "N": 128, "M": 192,
                       "weights": str(args.peer) if args.peer else "untrained (timing only)"},
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "torch": torch.__version__,
                          "allocator_tuned": tuned},
              "mean": mean, "faster_than_peer": verdict(mean[PEER]),
              "faster_than_peer_channels_last": verdict(mean[PEER_CL]), "per_image": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    for k in keys:
        print(f"{k:22s} encode {mean[k]['encode_s']:.3f} s  decode {mean[k]['decode_s']:.3f} s")


if __name__ == "__main__":
    main()
