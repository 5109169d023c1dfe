"""The shipped photo model: bit-exact across thread counts, coder efficiency, sane quality.

Skipped (with the reason) when weights/ does not hold the model yet.
"""
import hashlib
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT

KODIM = ROOT / "examples" / "kodim23.png"

SCRIPT = r"""
import hashlib, json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from PIL import Image
from hvqc.zoo import load
from hvqc.codec import compress_image, decompress_image
lm = load("photo")
img = Image.open(sys.argv[2]).convert("RGB").crop((128, 64, 384, 256))
res = compress_image(lm, img, 1)
out = decompress_image(res.data, lm)
print(json.dumps({"bytes": hashlib.sha256(res.data).hexdigest(),
                  "pixels": hashlib.sha256(out.tobytes()).hexdigest()}))
"""


def _run(threads, weights):
    env = dict(os.environ, HVQC_WEIGHTS=str(weights), OMP_NUM_THREADS=str(threads),
               PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(threads), str(KODIM)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_bit_exact_across_thread_counts(photo_weights):
    assert _run(1, photo_weights) == _run(2, photo_weights)


@pytest.fixture(scope="module")
def photo(photo_weights):
    from hvqc import zoo
    old = os.environ.get("HVQC_WEIGHTS")
    os.environ["HVQC_WEIGHTS"] = str(photo_weights)
    zoo.load.cache_clear()
    try:
        yield zoo.load("photo")
    finally:
        os.environ["HVQC_WEIGHTS"] = old
        zoo.load.cache_clear()


def test_payload_matches_the_prior_and_quality_is_sane(photo):
    from hvqc.analysis.metrics import as_float_rgb, ms_ssim, psnr
    from hvqc.codec import compress_image, decompress_image
    img = Image.open(KODIM).convert("RGB")
    prev = None
    # Every level and the refinements between them (the first 1..3 of a level's 4 groups).
    for level, groups in [(3, 0), (2, 1), (2, 2), (2, 3), (2, 0), (1, 1), (1, 2), (1, 3), (1, 0)]:
        res = compress_image(photo, img, level, groups=groups)
        payload, est = 8 * sum(res.payload_bytes), sum(res.estimated_bits)
        assert est - 32 <= payload <= est * 1.005 + 64 * len(res.payload_bytes)
        out = decompress_image(res.data, photo)
        q = (psnr(as_float_rgb(out), as_float_rgb(img)), ms_ssim(as_float_rgb(out), as_float_rgb(img)))
        if prev is not None:          # a finer cut costs more and looks better
            assert len(res.data) > prev[0] and q[0] > prev[1][0] and q[1] > prev[1][1]
        prev = (len(res.data), q)
    assert prev[1][0] > 20.5 and prev[1][1] > 0.82, prev    # level 1 on the parrots: 21.7 dB, 0.855


@pytest.mark.parametrize("level", [1, 2])
def test_search_raises_quality_at_about_the_same_rate(photo, level):
    """On four 256x192 crops of the parrots, 10 steps of search give +0.12 dB / +0.0009
    MS-SSIM for 1.9 % fewer bytes at level 1, and +0.34 dB / +0.011 for 2.8 % more at
    level 2 (means over the crops; each file with its colour correction).

    One crop alone is too fragile to test: the search keeps the best of its steps,
    and a change in float rounding alone (the model's channels-last weights) moved
    the first crop's level-1 result from +0.47 dB / +0.0037 to +0.06 dB / -0.0002,
    while sixteen BSDS500 test photos moved by 0.0001 on average. Earlier single-crop
    results: after the decode stage +0.05 dB / +0.0026 for 2.7 % fewer bytes and
    +0.41 dB / +0.0023 for 1.5 % more; after the decoder stage +0.15 dB / +0.0046 for
    -1.5 % and +0.68 dB / +0.011 for +1.8 %; the CPU-only model +0.50 dB / +0.014 and
    +0.75 dB / +0.025."""
    from hvqc.analysis.metrics import as_float_rgb, ms_ssim, psnr
    from hvqc.codec import compress_image, decompress_image
    from hvqc.search import SearchSettings
    full = Image.open(KODIM).convert("RGB")
    crops = [full.crop((x, y, x + 256, y + 192)) for y in (64, 256) for x in (128, 384)]
    out = []
    for search in (None, SearchSettings(steps=10)):
        rows = []
        for img in crops:
            ref = as_float_rgb(img)
            res = compress_image(photo, img, level, search=search)
            rec = as_float_rgb(decompress_image(res.data, photo))
            rows.append((len(res.data), psnr(rec, ref), ms_ssim(rec, ref)))
        n, p, m = zip(*rows)
        out.append((sum(n), sum(p) / len(p), sum(m) / len(m)))
    (n0, p0, m0), (n1, p1, m1) = out
    assert n1 <= 1.06 * n0 and p1 > p0 + 0.05 and m1 > m0 + 0.0005, out


def test_lambda_moves_down_the_levels_as_it_grows(photo):
    """``--lambda``: on a crop of the parrots, the slopes 0.5 / 4 / 32 pick levels 1 / 2 / 3
    (their whole files: 0.122 / 0.036 / 0.012 bpp), and a steeper slope never takes a
    larger file (the training distortion, (1 - MS-SSIM) + 10 MSE, per bpp: the scale
    the CLI's help gives)."""
    from hvqc.codec import pick_rd, scored_cuts
    img = Image.open(KODIM).convert("RGB").crop((128, 64, 384, 256))
    scored = scored_cuts(photo, img)
    px = img.width * img.height
    picks = {lam: pick_rd(scored, lam, px) for lam in (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)}
    assert [picks[lam][1:] for lam in (0.5, 4, 32)] == [(1, 0), (2, 0), (3, 0)]
    sizes = [len(p[0]) for p in picks.values()]
    assert sizes == sorted(sizes, reverse=True)
