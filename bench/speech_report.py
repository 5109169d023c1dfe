"""The speech report: rate, quality and linear probes of the shipped speech models.

For each model and level: bits per second of the real files (whole file, payload
only, and the priors' ``-log2 p``), measured over all held-out espeak-ng test
utterances and FSDD test takes (0-4); LSD, MCD and STOI of the decoded audio against
the original on a subset of them; and the same measures for the Griffin-Lim-only
baseline (the original features through the decoder's vocoder), which separates
what the codes lose from what phase reconstruction loses. Linear probes per level
(:mod:`hvqc.analysis.probe`): frame phone classification (espeak-ng alignments;
fitted on training utterances, scored on test ones) and spoken-digit classification
(FSDD, mean-pooled over time; fitted on train takes, scored on test takes), from the
dequantized code vectors of each level, the input log-mel features as reference.

Run (from the repository root, models installed in weights/):

    python bench/speech_report.py [--models speech,speech-aux-only,speech-down-only]
        [--espeak-quality 30] [--fsdd-quality 60] [--probe-train 200] [-o bench/results/speech.json]

The espeak-ng corpus is ``runs/speech/corpus`` (``$HVQC_SPEECH_CORPUS``), made if absent.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvqc import audio, bitstream, speech  # noqa: E402
from hvqc.analysis import probe  # noqa: E402
from hvqc.analysis.speech import lsd, mcd, stoi  # noqa: E402
from hvqc.corpus import corpus_items, fsdd_items  # noqa: E402
from hvqc.speech_data import speech_corpus  # noqa: E402
from hvqc.zoo import load, manifest  # noqa: E402

MODELS = ("speech", "speech-aux-only", "speech-down-only")


def _subset(items, n):
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


_STOI_OK: dict = {}


def _quality(ref: np.ndarray, est: np.ndarray, sr: int) -> dict:
    """LSD, MCD and STOI against the original; STOI is NaN (left out of the means) for
    clips too short for it (where STOI of the original against itself is not ~1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key = (len(ref), sr, float(np.sum(ref ** 2)))
        if key not in _STOI_OK:
            _STOI_OK[key] = stoi(ref, ref, sr) > 0.9
        s = stoi(ref, est, sr) if _STOI_OK[key] else float("nan")
        return {"lsd": lsd(ref, est, sr), "mcd": mcd(ref, est, sr), "stoi": s}


def _mean(rows: list[dict]) -> dict:
    out = {k: round(float(np.nanmean([r[k] for r in rows])), 4) for k in rows[0]} if rows else {}
    if rows:
        out["stoi_items"] = int(np.sum([np.isfinite(r["stoi"]) for r in rows]))
    return out


def _load(path: Path) -> tuple[np.ndarray, int]:
    x, sr = audio.read_wav(path)
    return audio.to_mono(x), sr


def gl_only(ref: np.ndarray, sr: int) -> np.ndarray:
    """The original signal's features through the decoder's vocoder, at the original rate."""
    x16 = speech.prepare(ref, sr)
    y = speech.vocode(speech.features(x16), len(x16))
    y = audio.resample(y, audio.SAMPLE_RATE, sr)[: len(ref)]
    return np.clip(y, -1, 1)


def rates_and_quality(lm, items: list[Path], quality_items: set[Path]) -> list[dict]:
    n = lm.model.num_levels
    acc = {lv: {"file": [], "payload": [], "ideal": [], "q": []} for lv in range(1, n + 1)}
    for p in items:
        ref, sr = _load(p)
        sec = len(ref) / sr
        res = speech.compress_speech(lm, ref, sr, 1)
        for lv in range(1, n + 1):
            keep = n - lv + 1                                  # levels n..lv, top first
            acc[lv]["file"].append(8 * len(bitstream.truncate(res.data, lv)) / sec)
            acc[lv]["payload"].append(8 * sum(res.payload_bytes[:keep]) / sec)
            acc[lv]["ideal"].append(sum(res.estimated_bits[:keep]) / sec)
            if p in quality_items:
                y, _ = speech.decompress_speech(res.data, lm, level=lv)
                acc[lv]["q"].append(_quality(ref, y, sr))
    out = []
    for lv in range(1, n + 1):
        a = acc[lv]
        out.append({"level": lv, "frame_ms": speech.frame_ms(lm.model.config, lv - 1),
                    "bps_file": round(float(np.mean(a["file"])), 1),
                    "bps_payload": round(float(np.mean(a["payload"])), 1),
                    "bps_ideal": round(float(np.mean(a["ideal"])), 1),
                    "items_rate": len(items), "items_quality": len(a["q"]), **_mean(a["q"])})
    return out


@torch.no_grad()
def level_features(lm, ref: np.ndarray, sr: int) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Dequantized code vectors of each level, upsampled to 10 ms frames ``[T, d]``; the
    input features ``[T, 80]``; and ``T``."""
    f = speech.features(speech.prepare(ref, sr))
    t = f.shape[-1]
    stride = lm.model.config.stride(lm.model.num_levels - 1)
    codes = lm.model.encode(speech._pad(f, stride)[None])
    out = []
    for l, idx in enumerate(codes):
        v = lm.model.levels[l].quantizer.decode(idx)[0].t().numpy()
        out.append(probe.upsample(v, lm.model.config.stride(l), t))
    return out, f.t().numpy(), t


def phone_probe(lm, train_items, test_items) -> tuple[list[float], float, float]:
    def collect(items):
        xs, ys, inp = None, [], []
        for it in items:
            ref, sr = _load(it.path)
            feats, f, t = level_features(lm, ref, sr)
            lab = probe.frame_labels(it.phones, t)
            keep = lab != ""
            xs = [[] for _ in feats] if xs is None else xs
            for acc, v in zip(xs, feats):
                acc.append(v[keep])
            inp.append(f[keep])
            ys.append(lab[keep])
        return [np.concatenate(a) for a in xs], np.concatenate(inp), np.concatenate(ys).astype(str)
    tr, tr_in, tr_y = collect(train_items)
    te, te_in, te_y = collect(test_items)
    accs = [probe.probe_accuracy(a, tr_y, b, te_y) for a, b in zip(tr, te)]
    return accs, probe.probe_accuracy(tr_in, tr_y, te_in, te_y), probe.majority_accuracy(tr_y, te_y)


def digit_probe(lm, train_items, test_items) -> tuple[list[float], float, float]:
    def collect(items):
        xs, inp, ys = None, [], []
        for it in items:
            ref, sr = _load(it.path)
            feats, f, _ = level_features(lm, ref, sr)
            xs = [[] for _ in feats] if xs is None else xs
            for acc, v in zip(xs, feats):
                acc.append(probe.mean_pool(v))
            inp.append(probe.mean_pool(f))
            ys.append(it.digit)
        return [np.stack(a) for a in xs], np.stack(inp), np.array(ys)
    tr, tr_in, tr_y = collect(train_items)
    te, te_in, te_y = collect(test_items)
    accs = [probe.probe_accuracy(a, tr_y, b, te_y) for a, b in zip(tr, te)]
    return accs, probe.probe_accuracy(tr_in, tr_y, te_in, te_y), probe.majority_accuracy(tr_y, te_y)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--espeak-quality", type=int, default=30, help="espeak test utterances scored for quality")
    ap.add_argument("--fsdd-quality", type=int, default=60, help="FSDD test takes scored for quality")
    ap.add_argument("--probe-train", type=int, default=200, help="espeak train utterances the phone probe fits on")
    ap.add_argument("--update", action="store_true",
                    help="keep the other models (and the baseline, unless --baseline) of an "
                         "existing output; recompute only --models")
    ap.add_argument("--baseline", action="store_true", help="with --update: also redo the baseline")
    ap.add_argument("--limit", type=int, default=None, help="smoke test: at most N items per list")
    ap.add_argument("-o", "--output", default=str(ROOT / "bench" / "results" / "speech.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    corpus = speech_corpus()
    es_test = corpus_items(corpus, "test")
    es_train = _subset(corpus_items(corpus, "train"), args.probe_train)
    fs_test, fs_train = fsdd_items("test"), fsdd_items("train")
    if args.limit:
        es_test, es_train, fs_test, fs_train = (_subset(v, args.limit) for v in
                                                (es_test, es_train, fs_test, fs_train))
    q_es = {it.path for it in _subset(es_test, args.espeak_quality)}
    q_fs = {it.path for it in _subset(fs_test, args.fsdd_quality)}
    report = {"data": {"espeak_test": len(es_test), "espeak_quality": len(q_es),
                       "fsdd_test": len(fs_test), "fsdd_quality": len(q_fs),
                       "phone_probe_train": len(es_train), "digit_probe_train": len(fs_train),
                       "corpus": str(corpus)},
              "vocoder": {"griffin_lim_iters": speech.GL_ITERS, "mel_inverse": "NNLS through the mel "
                          "filterbank", "features": "80 log-mel, 10 ms hop"}}
    old = {}
    out = Path(args.output)
    if args.update and out.exists():
        old = json.loads(out.read_text())
    # Griffin-Lim only: the original features through the same vocoder
    if "griffin_lim_only" in old and not args.baseline:
        report["griffin_lim_only"] = old["griffin_lim_only"]
    else:
        base = {}
        for name, paths in (("espeak", sorted(q_es)), ("fsdd", sorted(q_fs))):
            rows = []
            for p in paths:
                ref, sr = _load(p)
                rows.append(_quality(ref, gl_only(ref, sr), sr))
            base[name] = _mean(rows)
        report["griffin_lim_only"] = base
    print("griffin-lim only:", report["griffin_lim_only"], flush=True)
    man = manifest()["models"]
    report["models"] = dict(old.get("models", {}))
    for name in args.models.split(","):
        lm = load(name)
        entry = man[name]
        t0 = time.time()
        es = rates_and_quality(lm, [it.path for it in es_test], q_es)
        fs = rates_and_quality(lm, [it.path for it in fs_test], q_fs)
        ph, ph_in, ph_chance = phone_probe(lm, es_train, es_test)
        dg, dg_in, dg_chance = digit_probe(lm, fs_train, fs_test)
        tr = entry.get("training", {})
        report["models"][name] = {
            "variant": tr.get("variant"), "parameters": entry.get("parameters"),
            "train_steps": tr.get("steps"), "train_seconds": tr.get("wall_seconds"),
            "espeak": es, "fsdd": fs,
            "probes": {"phone_frame_acc": [round(a, 4) for a in ph], "digit_acc": [round(a, 4) for a in dg],
                       "input_features": {"phone_frame_acc": round(ph_in, 4), "digit_acc": round(dg_in, 4)},
                       "chance": {"phone_frame_acc": round(ph_chance, 4), "digit_acc": round(dg_chance, 4)}},
            "eval_seconds": round(time.time() - t0, 1)}
        print(name, json.dumps(report["models"][name]), flush=True)
    report["models"] = {k: report["models"][k] for k in MODELS + tuple(sorted(report["models"]))
                        if k in report["models"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
