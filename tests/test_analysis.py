"""The evaluation module: PWCCA, normalised MI, segment pooling, hooks, ``hvqc analyze``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hvqc.analysis import cca, mi
from hvqc.analysis.hooks import activations, collect, layer_names
from hvqc.analysis.segments import pool, pool_codes, positions


def _views(n=1500, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng, rng.normal(size=(n, d)) @ rng.normal(size=(d, d))


# --------------------------------------------------------------------------- PWCCA

def test_pwcca_linear_transform_is_one():
    rng, x = _views()
    r = cca.pwcca_cv(x, x @ rng.normal(size=(16, 16)), trials=1)
    assert r.pwcca > 0.999 and r.mean_cca > 0.999


def test_pwcca_independent_noise_is_zero():
    rng, x = _views()
    r = cca.pwcca_cv(x, rng.normal(size=(len(x), 12)), trials=2)
    assert abs(r.pwcca) < 0.05, r        # held-out correlations: no upward bias


def test_pwcca_invariant_to_invertible_map_of_the_other_view():
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 8, 2000)
    y = cca.one_hot(lab)
    x = y @ rng.normal(size=(8, 20)) + rng.normal(size=(2000, 20))
    a = cca.pwcca_cv(x, y, lab, trials=1, eps_grid=(1e-4,))
    b = cca.pwcca_cv(x, y @ rng.normal(size=(8, 8)), lab, trials=1, eps_grid=(1e-4,))
    assert 0.3 < a.pwcca < 0.99
    assert b.pwcca == pytest.approx(a.pwcca, abs=0.01)
    # mean CCA is invariant to maps of either view
    c = cca.pwcca_cv(x @ rng.normal(size=(20, 20)), y, lab, trials=1, eps_grid=(1e-4,))
    assert c.mean_cca == pytest.approx(a.mean_cca, abs=0.01)


def test_pwcca_orders_signal_strength_and_drops_dead_dims():
    rng = np.random.default_rng(2)
    lab = rng.integers(0, 5, 1000)
    y = cca.one_hot(lab)
    sig = y @ rng.normal(size=(5, 10))
    strong = cca.pwcca_cv(sig + 0.3 * rng.normal(size=sig.shape), y, lab, trials=1).pwcca
    weak = cca.pwcca_cv(sig + 3.0 * rng.normal(size=sig.shape), y, lab, trials=1).pwcca
    assert strong > weak > 0
    dead = np.concatenate([sig, np.zeros((1000, 3))], 1)     # zero-variance dims are dropped
    fit = cca.fit_cca(dead, y, 1e-4, 1e-4)
    assert fit.keep_x.sum() == 10


# --------------------------------------------------------------------------- MI

def test_mi_of_labels_with_themselves_and_shuffled():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 20, 5000)
    r = mi.mi_with_baseline(lab, lab)
    assert r.nmi == pytest.approx(1.0)
    assert r.baseline < 0.02            # the plug-in bias: ~ (19 * 19) / (2 * 5000 * ln 20)
    assert mi.normalised_mi(rng.permutation(lab), lab) < 0.02
    # a coarser partition keeps part of the information
    assert 0.2 < mi.normalised_mi(lab // 4, lab) < 0.8


def test_mi_baseline_grows_with_clusters_on_few_items():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 10, 300)
    few = mi.mi_with_baseline(rng.integers(0, 5, 300), lab).baseline
    many = mi.mi_with_baseline(rng.integers(0, 100, 300), lab).baseline
    assert many > few + 0.1            # the plug-in bias the baseline is there to show


def test_kmeans_units_recover_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6)) * 10
    lab_tr, lab_te = rng.integers(0, 4, 400), rng.integers(0, 4, 400)
    tr = centres[lab_tr] + rng.normal(size=(400, 6))
    te = centres[lab_te] + rng.normal(size=(400, 6))
    units = mi.kmeans_units(tr, te, clusters=4)
    assert mi.normalised_mi(units, lab_te) > 0.95


# --------------------------------------------------------------------------- segments

def test_segment_pooling_middle_third():
    hop = 0.01
    act = np.arange(20, dtype=float)[None].repeat(2, 0)       # [C=2, T=20], value = frame index
    act[1] *= 10
    # a phone over 0.03-0.12 s: middle third 0.06-0.09 -> frames 6..9 (centres t * 10 ms)
    seg = [(0.03, 0.12)]
    assert list(positions(0.06, 0.09, 20, 1, hop)) == [6, 7, 8, 9]
    assert pool(act, seg, 1, hop, "middle")[0].tolist() == [7.5, 75.0]
    assert pool(act, seg, 1, hop, "whole")[0, 0] == pytest.approx(7.5)      # frames 3..12
    # stride 4 (40 ms): position p centred at (4p + 1.5) * 10 ms; 0.06-0.09 holds none
    # (centres 55 ms, 95 ms) -> the position nearest the centre (75 ms): p = 1 (55) vs 2 (95)
    act4 = np.arange(5, dtype=float)[None]
    assert pool(act4, seg, 4, hop, "middle")[0, 0] == 1.0
    assert pool(act4, [(0.0, 0.15)], 4, hop, "whole")[0, 0] == pytest.approx(1.5)   # p = 0..3
    # the 20 ms -> 40 ms control keeps only even positions
    act2 = np.arange(10, dtype=float)[None]
    assert list(positions(0.0, 0.1, 10, 2, hop)) == [0, 1, 2, 3, 4]
    assert list(positions(0.0, 0.1, 10, 2, hop, keep_every=2)) == [0, 2, 4]
    assert pool(act2, [(0.02, 0.03)], 2, hop, "whole", keep_every=2)[0, 0] == 2.0
    codes = np.array([5, 5, 7, 7, 7, 1])
    assert pool_codes(codes, [(0.0, 0.06)], 1, hop)[0] == 7


# --------------------------------------------------------------------------- hooks

def test_hooks_collect_every_layer(tiny):
    m = tiny.model
    x = torch.rand(2, 3, 32, 32)
    acts = activations(m, x)
    names = layer_names(m)
    assert list(acts) == names
    assert names[:5] == ["L1.block1", "L1.latent", "L1.quantized", "L1.codes", "L2.block1"]
    # strides 4, 8, 16; hidden 16 channels, latents 8
    assert acts["L1.block1"].shape == (2, 16, 8, 8)
    assert acts["L1.latent"].shape == (2, 8, 8, 8)
    assert acts["L2.quantized"].shape == (2, 8, 4, 4)
    assert acts["L3.codes"].shape == (2, 2, 2) and acts["L3.codes"].dtype == torch.int64
    codes = m.encode(x)
    for i in range(3):
        assert torch.equal(acts[f"L{i + 1}.codes"], codes[i])
    # any module by name
    got = collect(m, lambda: m.latents(x), ["levels.0.encoder.net.0"])
    assert got["levels.0.encoder.net.0"].shape == (2, 32, 16, 16)     # first stride-2 conv (width >= 32)
    with pytest.raises(KeyError):
        collect(m, lambda: None, ["no.such.module"])


# --------------------------------------------------------------------------- CLI

def _need_mnist():
    from hvqc.data import data_root
    if not (data_root() / "mnist").exists():
        pytest.skip(f"MNIST not found under {data_root()} (set HVQC_DATA)")


def test_cli_analyze_writes_json_and_png(cli, tmp_path):
    _need_mnist()
    out = tmp_path / "an"
    rc, so, se = cli("analyze", "--model", "tiny-gray", "--compare", "tiny-gray", "-o", out,
                     "--items", "200", "--fit-items", "200", "--trials", "1", "--clusters", "10",
                     "--layers", "L1,L3.codes")
    assert rc == 0, se
    doc = json.loads((out / "analysis.json").read_text())
    res = doc["models"]["tiny-gray"]
    names = [lay["name"] for lay in res["layers"]]
    assert names == ["input", "L1.block1", "L1.latent", "L1.quantized", "L1.codes", "L3.codes"]
    s = res["scores"]["L1.latent"]
    assert {"class_pwcca", "class_mi", "prev_pwcca"} <= set(s)
    assert -0.2 < s["class_pwcca"]["pwcca"] <= 1 and 0 <= s["class_mi"]["nmi"] <= 1
    assert "baseline" in s["class_mi"] and res["items"]["classes"]["items"] == 200
    assert (out / "tiny-gray.png").read_bytes()[:4] == b"\x89PNG"
    # an existing output is refused without --force: one line, no traceback
    rc, so, se = cli("analyze", "--model", "tiny-gray", "-o", out)
    assert rc == 1 and se.startswith("hvqc: error:") and len(se.strip().splitlines()) == 1
    assert "--force" in se and "Traceback" not in se


def test_cli_analyze_user_errors(cli, tmp_path):
    rc, _, se = cli("analyze", "--model", "tiny", "--labels", "phones", "-o", tmp_path / "x")
    assert rc == 1 and se.startswith("hvqc: error:") and "Traceback" not in se
    assert "phones" in se and len(se.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    from hvqc.analyze import load_model
    from hvqc.zoo import ModelError
    with pytest.raises(ModelError, match="unknown model"):
        load_model("nope")
    bad = tmp_path / "run"
    bad.mkdir()
    torch.save({"step": 1}, bad / "ckpt.pt")
    with pytest.raises(ValueError, match="not an hvqc training checkpoint"):
        load_model(str(bad))


def test_rates():
    from hvqc.analysis.metrics import bpp, bps, estimated_bits
    assert bpp(1000, 100, 80) == pytest.approx(1.0)
    assert bps(2000, 2.0) == pytest.approx(8000.0)
    assert estimated_bits([0.5, 0.25, 1.0]) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        estimated_bits([0.0])


def test_speech_analysis_on_a_tiny_corpus(tmp_path):
    from hvqc import corpus
    from hvqc.analyze import Settings, analyze_model, load_model
    if not corpus.available_voices():
        pytest.skip("espeak-ng voices not available: no corpus can be synthesized")
    corpus.make_corpus(tmp_path / "c", 2, 10, seed=1)
    lm = load_model("tiny-speech")
    res = analyze_model(lm, Settings(labels=["phones"], items=11, fit_items=1, trials=1, clusters=8,
                                     layers=["L1.latent", "L3.codes"], corpus=str(tmp_path / "c")),
                        progress=False)
    names = [lay["name"] for lay in res["layers"]]
    assert names == ["input", "L1.latent", "L3.codes", "L1.latent:drop2"]
    steps = {lay["name"]: lay["step_ms"] for lay in res["layers"]}
    assert steps == {"input": 10, "L1.latent": 20, "L3.codes": 80, "L1.latent:drop2": 40}
    assert res["data"]["from_test"] == 10 and res["data"]["from_train"] == 1
    s = res["scores"]
    assert s["input"]["mel_pwcca"]["pwcca"] > 0.99          # the input against itself
    assert set(s["L1.latent"]) == {"phone_pwcca", "mel_pwcca", "prev_pwcca", "phone_mi"}
    assert set(s["L3.codes"]) == {"phone_mi"} and s["L3.codes"]["phone_mi"]["units_from"] == "codes"
    # every layer scores the same phone segments
    assert len({v["phone_mi"]["items"] for v in s.values()}) == 1
