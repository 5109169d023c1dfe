"""The seed study's table: per-layer scores of ``hvqc analyze`` results, mean and spread
over training seeds, one block per model variant.

Reads any number of ``analysis.json`` files written by ``hvqc analyze``; a model named
``NAME-seedK`` (a run folder of that name) counts as seed K of variant ``NAME``, any
other name as seed 0 of itself. Writes a markdown table (``-o``, default stdout) and,
with ``--plot``, one panel per measure with the variants' seed means overlaid
(error bars: the spread over seeds).

    python bench/analysis_study.py runs/analysis/speech-{down+aux,aux-only,down-only}/analysis.json \\
        runs/analysis/*-seed1/analysis.json --rename speech-down+aux=speech \\
        --layers input,latent,codes --merge bench/results/analysis/speech \\
        -o bench/results/analysis/speech/study.md --plot bench/results/analysis/speech/study.png

``--merge`` writes the seed-0 models (names without ``-seedK``) as one ``hvqc analyze``
result folder (``analysis.json``, ``summary.md``, a PNG per model, ``compare.png``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

MEASURES = ("phone_pwcca", "word_pwcca", "phone_mi", "word_mi", "class_pwcca", "class_mi", "mel_pwcca")
SEED = re.compile(r"^(.*)-seed(\d+)$")


def _value(entry):
    if not entry:
        return None, None
    if "pwcca" in entry:
        return entry["pwcca"], None
    return entry["nmi"], entry["baseline"]


def merge(paths: list[Path], rename: dict) -> dict:
    """One ``hvqc analyze`` document holding the models of several (renamed)."""
    doc = None
    for p in paths:
        d = json.loads(Path(p).read_text())
        if doc is None:
            doc = {**d, "models": {}}
        for name, res in d["models"].items():
            doc["models"][rename.get(name, name)] = res
    return doc


def gather(paths: list[Path], rename: dict | None = None) -> dict:
    """``{variant: {"seeds": [...], "layers": [...], "steps": {layer: ms},
    "scores": {layer: {measure: [(value, baseline) per seed]}}}}``."""
    out: dict = {}
    for p in paths:
        doc = json.loads(Path(p).read_text())
        for name, res in doc["models"].items():
            name = (rename or {}).get(name, name)
            m = SEED.match(name)
            if m and m.group(1) in (rename or {}):
                m = SEED.match(f"{rename[m.group(1)]}-seed{m.group(2)}")
            variant, seed = (m.group(1), int(m.group(2))) if m else (name, 0)
            v = out.setdefault(variant, {"seeds": [], "layers": [], "steps": {},
                                         "scores": defaultdict(lambda: defaultdict(list))})
            if seed in v["seeds"]:
                continue
            v["seeds"].append(seed)
            for lay in res["layers"]:
                n = lay["name"]
                if n not in v["layers"]:
                    v["layers"].append(n)
                v["steps"][n] = lay.get("step_ms")
                for meas, entry in res["scores"][n].items():
                    v["scores"][n][meas].append(_value(entry))
    return out


def _cell(vals) -> str:
    if not vals:
        return ""
    x = np.array([v for v, _ in vals], float)
    b = [bb for _, bb in vals if bb is not None]
    s = f"{x.mean():.3f}"
    if len(x) > 1:
        s += f" ± {x.std(ddof=1):.3f}"
    if b:
        s += f" ({np.mean(b):.3f})"
    return s


def table(data: dict, measures=MEASURES, layers=()) -> str:
    lines = []
    for variant, v in data.items():
        ms = [m for m in measures if any(m in v["scores"][n] for n in v["layers"])]
        names = [n for n in v["layers"] if not layers or any(k in n for k in layers)]
        seeds = ", ".join(map(str, sorted(v["seeds"])))
        lines += [f"**{variant}** (seeds {seeds}; mean ± sd over seeds; MI: shuffled-label "
                  f"baseline in brackets)", "",
                  "| layer | step | " + " | ".join(ms) + " |", "|---|---|" + "---|" * len(ms)]
        for n in names:
            step = v["steps"].get(n)
            lines.append(f"| {n} | {'' if step is None else f'{step:g} ms'} | "
                         + " | ".join(_cell(v["scores"][n].get(m)) for m in ms) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(data: dict, path: Path, measures=("phone_pwcca", "word_pwcca", "phone_mi", "word_mi")) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs: list[str] = []
    for v in data.values():
        xs += [n for n in v["layers"] if n not in xs and ":" not in n]
    from hvqc.analyze import layer_order
    xs.sort(key=layer_order)
    ms = [m for m in measures if any(m in v["scores"][n] for v in data.values() for n in v["layers"])]
    fig, axes = plt.subplots(1, len(ms), figsize=(4.6 * len(ms), 3.8), squeeze=False)
    for ax, m in zip(axes[0], ms):
        for j, (variant, v) in enumerate(data.items()):
            mean, sd, base = [], [], []
            for n in xs:
                vals = v["scores"].get(n, {}).get(m) if n in v["scores"] else None
                if vals:
                    a = np.array([x for x, _ in vals], float)
                    mean.append(a.mean())
                    sd.append(a.std(ddof=1) if len(a) > 1 else 0.0)
                    bs = [b for _, b in vals if b is not None]
                    base.append(np.mean(bs) if bs else np.nan)
                else:
                    mean.append(np.nan)
                    sd.append(0.0)
                    base.append(np.nan)
            ok = [i for i, v in enumerate(mean) if np.isfinite(v)]
            ax.errorbar(ok, [mean[i] for i in ok], yerr=[sd[i] for i in ok], fmt="o-", ms=3,
                        color=f"C{j}", label=variant, capsize=2)
            okb = [i for i, v in enumerate(base) if np.isfinite(v)]
            if okb:
                ax.plot(okb, [base[i] for i in okb], ":", color=f"C{j}", lw=1)
        ax.set_title(m, fontsize=9)
        ax.set_xticks(range(len(xs)), xs, rotation=60, ha="right", fontsize=6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="analysis.json files")
    ap.add_argument("-o", "--output", type=Path, help="markdown table (default: stdout)")
    ap.add_argument("--plot", type=Path, help="PNG of the variants' seed means")
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                    help="report model OLD (and OLD-seedK) as NEW")
    ap.add_argument("--layers", default="", help="table rows: layers whose name contains one of "
                    "these (comma-separated; default all)")
    ap.add_argument("--measures", default=",".join(MEASURES), help="table columns")
    ap.add_argument("--merge", type=Path, metavar="DIR",
                    help="also write the models as one hvqc analyze result folder (JSON, PNGs)")
    args = ap.parse_args(argv)
    rename = dict(r.split("=", 1) for r in args.rename)
    data = gather(args.results, rename)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.merge:
        from hvqc.analyze import write_outputs
        seed0 = [p for p in args.results
                 if not any(SEED.match(n) for n in json.loads(Path(p).read_text())["models"])]
        write_outputs(merge(seed0, rename), args.merge)
    text = table(data, [m for m in args.measures.split(",") if m],
                 [k for k in args.layers.split(",") if k])
    if args.output:
        args.output.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    if args.plot:
        plot(data, args.plot)


if __name__ == "__main__":
    main()
