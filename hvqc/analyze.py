"""``hvqc analyze``: what each layer of an hvqc model represents.

The driver: loads models, runs them over labelled items collecting every layer
(:mod:`hvqc.analysis.hooks`), aligns layers with phone and word segments (speech,
:mod:`hvqc.analysis.segments`) or pools them per image (digits), and calls the pure
scoring functions (:mod:`hvqc.analysis.cca`, :mod:`hvqc.analysis.mi`). Writes one JSON
file and PNG plots. Nothing in the codec imports this module.

Measures, per layer (``L{l}.block{j}``, ``L{l}.latent``, ``L{l}.quantized``,
``L{l}.codes``, plus the model input as a reference row):

* ``{label}_pwcca``: PWCCA with one-hot labels (10 label-stratified folds, 3 trials,
  eps chosen on held-out folds), label = ``phone``, ``word`` or ``class``;
* ``mel_pwcca`` (speech): PWCCA with the log-mel features of the same segments;
* ``prev_pwcca``: PWCCA with the previous layer (on the first label kind's items,
  phones for speech; one trial);
* ``{label}_mi``: ``I(units; labels) / H(labels)`` with a shuffled-label baseline;
  units are k-means clusters (fitted on training items, the same cluster count at
  every layer) or, for ``.codes`` layers, the code indices themselves.

Speech items: phones use the frames covering the middle third of each phone (pauses
left out), words the frames of the whole word (lower-cased), mean-pooled; codes take
the most frequent code of those frames. Label classes with fewer than 10 items in the
scored set are left out, so every layer scores the same items. Control layers
``NAME:drop2`` score a 20 ms layer after dropping every other frame (40 ms).

Image items (digits): each layer is average-pooled to at most 2x2 positions and
flattened; codes take the most frequent code of the map; the input is pooled to 8x8.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .analysis import cca, mi
from .analysis.hooks import activations
from .analysis.segments import pool, pool_codes

__all__ = ["Settings", "analyze_model", "analyze", "plot_model", "plot_compare", "SPEECH_LABELS",
           "IMAGE_LABELS", "default_corpus"]

SPEECH_LABELS = ("phones", "words")
IMAGE_LABELS = ("classes",)
LABEL_MEASURE = {"phones": "phone", "words": "word", "classes": "class"}
FORMAT = "hvqc-analysis"
MIN_CLASS = 10            # items a label class needs to be scored (one per fold)


@dataclass
class Settings:
    """What ``hvqc analyze`` measures on.

    Attributes:
        labels: label kinds (speech: phones, words; images: classes); empty = all.
        items: speech utterances scored (the test split, then training utterances from
            the end of the list) or digits scored (MNIST test).
        fit_items: training utterances / digits the k-means clusters are fitted on
            (from the start of the training list, disjoint from the scored ones).
        clusters: k-means cluster count (the same at every layer).
        folds, trials: PWCCA cross-validation.
        seed: folds, k-means and shuffles.
        layers: substrings; only layers whose name contains one are scored (empty: all).
        corpus: the speech corpus folder.
    """

    labels: list[str] = field(default_factory=list)
    items: int = 500
    fit_items: int = 300
    clusters: int = 100
    folds: int = 10
    trials: int = 3
    seed: int = 0
    layers: list[str] = field(default_factory=list)
    corpus: str = ""


def default_corpus() -> Path:
    import os
    return Path(os.environ.get("HVQC_SPEECH_CORPUS") or Path("runs") / "speech" / "corpus")


def load_model(spec: str):
    """A model by name (:func:`hvqc.zoo.load`, verified) or a training checkpoint: a run
    folder holding ``ckpt.pt`` or the ``.pt`` file itself (named after its folder)."""
    from types import SimpleNamespace
    from .zoo import from_state, load
    p = Path(spec)
    ck_path = p / "ckpt.pt" if p.is_dir() else p
    if not (ck_path.suffix == ".pt" and ck_path.is_file()):
        return load(spec)
    ck = torch.load(ck_path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or "config" not in ck or "model" not in ck:
        raise ValueError(f"{ck_path} is not an hvqc training checkpoint")
    from .zoo import sha256_file
    meta = ck.get("meta") or {}
    name = ck_path.parent.name if p.is_dir() or ck_path.name == "ckpt.pt" else ck_path.stem
    return SimpleNamespace(name=name, sha256=sha256_file(ck_path), model=from_state(ck["config"], ck["model"]),
                           modality=meta.get("modality", "image"), info={"checkpoint": str(ck_path),
                                                                         "step": ck.get("step")})


# --------------------------------------------------------------------------- items

@dataclass
class Views:
    """Pooled items of one label kind: per layer ``[n, C]`` (codes: ``[n]``)."""

    labels: np.ndarray
    layers: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)      # the same pooling over the fitting items
    mel: np.ndarray | None = None


def _wanted(name: str, settings: Settings) -> bool:
    base = name.split(":")[0]
    return base == "input" or not settings.layers or any(s in name for s in settings.layers)


def _layer_info(name: str, stride: int, dims: int, unit_ms: float | None, control_of: str | None = None):
    info = {"name": name, "stride": stride, "dims": dims}
    if unit_ms is not None:
        info["step_ms"] = round(stride * unit_ms, 3)
    if control_of:
        info["control_of"] = control_of
    return info


def _speech_views(lm, settings: Settings, progress: bool):
    from .audio import HOP, SAMPLE_RATE, load_mono
    from .corpus import corpus_items
    from .speech import FEATURE_FLOOR, FEATURE_MEAN, FEATURE_STD, features
    root = Path(settings.corpus) if settings.corpus else default_corpus()
    if not (root / "index.json").exists():
        raise FileNotFoundError(f"no speech corpus at {root} (make one with `hvqc speech corpus`, "
                                f"or give --corpus)")
    test, train = corpus_items(root, "test"), corpus_items(root, "train")
    score = (test + train[::-1])[: settings.items]
    n_from_train = max(0, len(score) - len(test))
    fit = train[: max(0, min(settings.fit_items, len(train) - n_from_train))]
    if not fit:
        raise ValueError("no training utterances left to fit the clusters on (lower --items)")
    model = lm.model
    top = model.config.stride(model.num_levels - 1)
    floor = float((np.log(FEATURE_FLOOR) - FEATURE_MEAN) / FEATURE_STD)
    hop = HOP / SAMPLE_RATE
    kinds = settings.labels or list(SPEECH_LABELS)
    layers: dict[str, dict] = {}

    def run(items, desc):
        pooled = {k: {} for k in kinds}
        labels = {k: [] for k in kinds}
        mels = []
        from tqdm import tqdm
        for it in tqdm(items, desc=desc, disable=not progress, leave=False):
            f = features(load_mono(it.path))
            t = f.shape[-1]
            x = torch.cat([f, f.new_full((f.shape[0], -t % top), floor)], -1)[None]
            acts = activations(model, x)
            named = [("input", f, 1)] + [(k, v[0], max(1, round(x.shape[-1] / v.shape[-1])))
                                         for k, v in acts.items()]
            controls = [(f"{k}:drop2", v, s, k) for k, v, s in named
                        if s == 2 and (k.endswith(".latent") or k.endswith(".codes"))]
            segs = {
                "phones": ([(s, e) for s, e, p in it.phones if p != "_"],
                           [p for s, e, p in it.phones if p != "_"], "middle"),
                "words": ([(s, e) for s, e, w in it.words], [w.lower() for s, e, w in it.words], "whole"),
            }
            for kind in kinds:
                spans, labs, part = segs[kind]
                if not spans:
                    continue
                labels[kind] += labs
                for name, v, stride, *src in [(*n, None) for n in named] + controls:
                    if not _wanted(name, settings):
                        continue
                    keep = 2 if ":drop2" in name else 1
                    v = v.numpy()
                    is_codes = name.split(":")[0].endswith(".codes")
                    if is_codes:
                        p = pool_codes(v, spans, stride, hop, part, keep)
                    else:
                        p = pool(v[:, : math.ceil(t / stride)], spans, stride, hop, part, keep)
                    pooled[kind].setdefault(name, []).append(p)
                    if name not in layers:
                        layers[name] = _layer_info(name, stride, 1 if is_codes else v.shape[0],
                                                   1000 * hop * keep, src[0] if src and src[0] else None)
            if "phones" in kinds:
                spans, _, _ = segs["phones"]
                if spans:
                    mels.append(pool(f.numpy(), spans, 1, hop, "middle"))
        out = {}
        for kind in kinds:
            out[kind] = (np.array(labels[kind]),
                         {k: np.concatenate(v) for k, v in pooled[kind].items()})
        return out, (np.concatenate(mels) if mels else None)

    scored, mel = run(score, "analyze: items")
    fitted, _ = run(fit, "analyze: fit items")
    views = {}
    for kind in kinds:
        labels, lay = scored[kind]
        views[kind] = Views(labels, lay, fitted[kind][1], mel if kind == "phones" else None)
    meta = {"corpus": str(root), "utterances_scored": len(score), "from_test": len(score) - n_from_train,
            "from_train": n_from_train, "utterances_fit": len(fit)}
    return views, layers, meta


def _pool_image(v: torch.Tensor, side: int) -> np.ndarray:
    g = min(side, v.shape[-1], v.shape[-2])
    return F.adaptive_avg_pool2d(v.float(), g).flatten(1).numpy().astype(np.float64)


def _mode_rows(codes: torch.Tensor) -> np.ndarray:
    flat = codes.flatten(1).numpy()
    return np.array([np.bincount(r).argmax() for r in flat], np.int64)


def _digits(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` MNIST digits of a split, resized as :func:`hvqc.datasets.mnist` does."""
    from .data import require
    from .datasets import MNIST_SIZE, read_idx
    stem = "train" if split == "train" else "t10k"
    root = require("mnist")
    x = read_idx(root / f"{stem}-images-idx3-ubyte.gz")[:n]
    y = read_idx(root / f"{stem}-labels-idx1-ubyte.gz")[:n]
    x = torch.from_numpy(x.astype(np.float32) / 255.0)[:, None]
    x = F.interpolate(x, size=(MNIST_SIZE, MNIST_SIZE), mode="bilinear", align_corners=False).clamp_(0, 1)
    return x, torch.from_numpy(y.astype(np.int64))


def _image_views(lm, settings: Settings, progress: bool):
    model = lm.model
    if model.config.channels != 1:
        raise ValueError(f"model {lm.name!r} has {model.config.channels} channels: digit classes "
                         f"need a gray model (mnist)")
    xs, ys = _digits("test", settings.items)
    xf, _ = _digits("train", settings.fit_items)
    n = len(xs)
    if n < 2 * settings.folds:
        raise ValueError(f"--items must be at least {2 * settings.folds}")
    layers: dict[str, dict] = {}

    def run(x):
        pooled: dict[str, list] = {}
        for i in range(0, len(x), 250):
            xb = x[i: i + 250]
            acts = activations(model, xb)
            named = [("input", xb)] + list(acts.items())
            for name, v in named:
                if not _wanted(name, settings):
                    continue
                is_codes = name.endswith(".codes")
                p = _mode_rows(v) if is_codes else _pool_image(v, 8 if name == "input" else 2)
                pooled.setdefault(name, []).append(p)
                if name not in layers:
                    layers[name] = _layer_info(name, xb.shape[-1] // v.shape[-1],
                                               1 if is_codes else p.shape[1], None)
        return {k: np.concatenate(v) for k, v in pooled.items()}

    with torch.no_grad():
        scored = run(xs[:n])
        fitted = run(xf)
    views = {"classes": Views(ys[:n].numpy(), scored, fitted)}
    meta = {"data": "mnist", "digits_scored": n, "scored_from": "test", "digits_fit": len(xf),
            "fit_from": "train"}
    return views, layers, meta


# --------------------------------------------------------------------------- scores

def _keep_common(labels: np.ndarray, minimum: int) -> np.ndarray:
    vals, counts = np.unique(labels, return_counts=True)
    return np.isin(labels, vals[counts >= minimum])


def analyze_model(lm, settings: Settings, progress: bool = True) -> dict:
    """Every measure at every layer of one loaded model (:class:`hvqc.zoo.LoadedModel`)."""
    kinds_ok = SPEECH_LABELS if lm.modality == "speech" else IMAGE_LABELS
    bad = [k for k in settings.labels if k not in kinds_ok]
    if bad:
        raise ValueError(f"labels {', '.join(bad)} do not apply to {lm.modality} model {lm.name!r} "
                         f"(it takes: {', '.join(kinds_ok)})")
    t0 = time.time()
    if lm.modality == "speech":
        views, layers, meta = _speech_views(lm, settings, progress)
    else:
        views, layers, meta = _image_views(lm, settings, progress)
    names = list(layers)
    scores: dict[str, dict] = {n: {} for n in names}
    counts = {}
    from tqdm import tqdm
    work = [(kind, name) for kind in views for name in names if name in views[kind].layers]
    bar = tqdm(total=len(work), desc=f"analyze {lm.name}", disable=not progress, leave=False)
    for kind, v in views.items():
        keep = _keep_common(v.labels, max(MIN_CLASS, settings.folds))
        labels = v.labels[keep]
        if len(labels) < 2 * settings.folds:
            raise ValueError(f"too few {kind} items with common labels: {len(labels)}")
        counts[kind] = {"items": int(len(labels)), "classes": int(len(np.unique(labels))),
                        "items_dropped_rare": int((~keep).sum()),
                        "label_entropy_bits": mi.label_entropy(labels) / math.log(2)}
        y = cca.one_hot(labels)
        m = LABEL_MEASURE[kind]
        prev = None
        for name in names:
            if name not in v.layers:
                continue
            x = v.layers[name][keep]
            is_codes = name.split(":")[0].endswith(".codes")
            s = scores[name]
            if is_codes:
                s[f"{m}_mi"] = asdict(mi.mi_with_baseline(x, labels, seed=settings.seed))
                s[f"{m}_mi"]["units_from"] = "codes"
            else:
                r = cca.pwcca_cv(x, y, labels, settings.folds, settings.trials, seed=settings.seed)
                s[f"{m}_pwcca"] = _pw(r)
                if v.mel is not None:
                    s["mel_pwcca"] = _pw(cca.pwcca_cv(x, v.mel[keep], labels, settings.folds,
                                                      settings.trials, seed=settings.seed))
                if prev is not None and ":" not in name and kind == next(iter(views)):
                    s["prev_pwcca"] = _pw(cca.pwcca_cv(x, v.layers[prev][keep], labels, settings.folds,
                                                       1, seed=settings.seed))
                    s["prev_pwcca"]["previous"] = prev
                units = mi.kmeans_units(v.fit[name], x, settings.clusters, settings.seed)
                s[f"{m}_mi"] = asdict(mi.mi_with_baseline(units, labels, seed=settings.seed))
                s[f"{m}_mi"]["units_from"] = f"k-means ({settings.clusters})"
                if ":" not in name:
                    prev = name
            bar.update(1)
    bar.close()
    return {"modality": lm.modality, "sha256": lm.sha256, "layers": [layers[n] for n in names],
            "items": counts, "data": meta, "scores": scores, "seconds": round(time.time() - t0, 1)}


def _pw(r: cca.PWCCAResult) -> dict:
    return {"pwcca": r.pwcca, "std": r.std, "mean_cca": r.mean_cca, "eps": list(r.eps),
            "trials": r.trials, "items": r.items}


def score_of(entry: dict | None) -> tuple[float | None, float | None]:
    """``(score, baseline)`` of one measure entry (baseline None for PWCCA)."""
    if not entry:
        return None, None
    if "pwcca" in entry:
        return entry["pwcca"], None
    return entry["nmi"], entry["baseline"]


def analyze(lms: list, settings: Settings, progress: bool = True) -> dict:
    """:func:`analyze_model` for each model; the JSON document ``hvqc analyze`` writes."""
    return {"format": FORMAT, "version": 1, "settings": asdict(settings),
            "models": {lm.name: analyze_model(lm, settings, progress) for lm in lms}}


# --------------------------------------------------------------------------- plots

MEASURE_ORDER = ("phone_pwcca", "word_pwcca", "class_pwcca", "mel_pwcca", "prev_pwcca",
                 "phone_mi", "word_mi", "class_mi")


def measures_of(res: dict) -> list[str]:
    found = {k for s in res["scores"].values() for k in s}
    return [m for m in MEASURE_ORDER if m in found]


def _xlayers(res: dict) -> list[str]:
    return [lay["name"] for lay in res["layers"] if "control_of" not in lay]


def _line(ax, ys, fmt, **kw) -> None:
    """Plot the points that exist, joined across the layers a measure skips."""
    pts = [(i, y) for i, y in enumerate(ys) if y is not None and np.isfinite(y)]
    if pts:
        ax.plot([i for i, _ in pts], [y for _, y in pts], fmt, **kw)


def plot_model(name: str, res: dict, path: Path, write=None) -> None:
    """Score per layer, one line per measure (MI baselines dashed, controls as crosses)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = _xlayers(res)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(xs) + 2), 4.2))
    for i, m in enumerate(measures_of(res)):
        c = f"C{i}"
        ys = [score_of(res["scores"][n].get(m))[0] for n in xs]
        bs = [score_of(res["scores"][n].get(m))[1] for n in xs]
        _line(ax, ys, "o-", color=c, label=m, ms=4)
        _line(ax, bs, ":", color=c, lw=1)
        for lay in res["layers"]:
            if "control_of" in lay and lay["control_of"] in xs:
                y = score_of(res["scores"][lay["name"]].get(m))[0]
                if y is not None:
                    ax.plot([xs.index(lay["control_of"])], [y], "x", color=c, ms=7)
    ax.set_xticks(range(len(xs)), xs, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("score (PWCCA / normalised MI)")
    note = "; x: 20 ms layer at 40 ms" if res["modality"] == "speech" else ""
    ax.set_title(f"{name}: per layer (dotted: shuffled-label MI{note})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path, write)


def layer_order(name: str) -> tuple:
    """Sort key: the input, then each level's blocks, latent, quantized latent and codes."""
    base, _, ctrl = name.partition(":")
    if base == "input":
        return (0, 0, 0, ctrl)
    lvl, _, kind = base.partition(".")
    rank = {"latent": 100, "quantized": 101, "codes": 102}
    k = int(kind[5:]) if kind.startswith("block") and kind[5:].isdigit() else rank.get(kind, 103)
    return (1, int(lvl[1:]) if lvl[1:].isdigit() else 0, k, ctrl)


def plot_compare(doc: dict, path: Path, write=None) -> None:
    """One panel per measure, one line per model (layers aligned by name)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = doc["models"]
    xs: list[str] = []
    for res in models.values():
        xs += [n for n in _xlayers(res) if n not in xs]
    xs.sort(key=layer_order)
    ms = [m for m in MEASURE_ORDER if any(m in measures_of(r) for r in models.values())]
    cols = min(3, len(ms))
    rows = math.ceil(len(ms) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, m in zip(axes.flat, ms):
        for j, (name, res) in enumerate(models.items()):
            ys = [score_of(res["scores"].get(n, {}).get(m))[0] for n in xs]
            bs = [score_of(res["scores"].get(n, {}).get(m))[1] for n in xs]
            _line(ax, ys, "o-", color=f"C{j}", label=name, ms=3)
            _line(ax, bs, ":", color=f"C{j}", lw=1)
        ax.set_title(m, fontsize=9)
        ax.set_xticks(range(len(xs)), xs, rotation=60, ha="right", fontsize=6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(ms):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path, write)


def _save(fig, path: Path, write) -> None:
    import matplotlib.pyplot as plt
    if write is None:
        fig.savefig(path, dpi=110)
    else:
        write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def _fmt(entry: dict | None) -> str:
    v, b = score_of(entry)
    if v is None:
        return ""
    return f"{v:.3f}" if b is None else f"{v:.3f} ({b:.3f})"


def summary_md(doc: dict) -> str:
    """One markdown table per model: every measure per layer (MI: shuffled-label baseline
    in brackets)."""
    lines = []
    for name, res in doc["models"].items():
        ms = measures_of(res)
        items = ", ".join(f"{k}: {v['items']} items, {v['classes']} classes"
                          for k, v in res["items"].items())
        lines += [f"### {name}", "", f"{res['modality']} model; {items}", "",
                  "| layer | step | " + " | ".join(ms) + " |", "|---|---|" + "---|" * len(ms)]
        for lay in res["layers"]:
            step = f"{lay['step_ms']:g} ms" if "step_ms" in lay else f"/{lay['stride']}"
            lines.append(f"| {lay['name']} | {step} | "
                         + " | ".join(_fmt(res["scores"][lay["name"]].get(m)) for m in ms) + " |")
        lines.append("")
    return "\n".join(lines)


def write_outputs(doc: dict, out: Path, write=None) -> list[Path]:
    """``analysis.json``, ``summary.md``, one PNG per model and ``compare.png`` for
    several models."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "analysis.json", out / "summary.md"]
    for p, text in zip(paths, [json.dumps(doc, indent=1) + "\n", summary_md(doc)]):
        if write is None:
            p.write_text(text)
        else:
            write(p, lambda f, text=text: f.write(text.encode()))
    for name, res in doc["models"].items():
        p = out / f"{name}.png"
        plot_model(name, res, p, write)
        paths.append(p)
    if len(doc["models"]) > 1:
        p = out / "compare.png"
        plot_compare(doc, p, write)
        paths.append(p)
    return paths
