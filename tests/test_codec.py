"""Tests for hvqc.codec and hvqc.api with the tiny test model."""
import copy
import hashlib
import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from hvqc import api, bitstream, codec, colour, entropy
from hvqc.bitstream import FormatError
from hvqc.image import pad_to, to_tensor
from hvqc.zoo import ModelError

# sha256 of tests/data/photo96x64.png coded by the tiny model at level 1.
# A change here means the bitstream changed: bump hvqc.bitstream.VERSION.
GOLDEN_SHA256 = "84a9d99cee6f8030f8a85b0949ec49ed930419ca3914df1ba63ce8eb46a264e4"


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img).copy()


@pytest.fixture(scope="module")
def big_img(photo_path) -> Image.Image:
    """A 384x256 image: enough positions for the rate checks to mean something."""
    return Image.open(photo_path).convert("RGB").resize((384, 256), Image.BICUBIC)


@pytest.fixture(scope="module")
def files(tiny, photo_path):
    """The test photo coded at each level: {level: CompressResult}."""
    img = Image.open(photo_path).convert("RGB")
    return {lv: codec.compress_image(tiny, img, lv) for lv in (1, 2, 3)}


# --- round trips ---------------------------------------------------------------

@pytest.mark.parametrize("level", [1, 2, 3])
def test_round_trip_each_level(tiny, files, level):
    res = files[level]
    assert res.levels == tuple(range(3, level - 1, -1))
    assert len(res.payload_bytes) == len(res.estimated_bits) == len(res.levels)
    c = bitstream.read(res.data)
    assert c.header.model == "tiny" and c.header.weights_hash == tiny.hash_prefix
    assert (c.header.width, c.header.height, c.header.mode) == (96, 64, "RGB")
    assert [len(s) for s in c.segments] == res.payload_bytes
    out = api.decompress(res.data)
    assert out.size == (96, 64) and out.mode == "RGB"


def test_level_stops_early_exactly(files, plain):
    full = files[1].data
    for level in (2, 3):
        a = api.decompress(full, level=level)
        b = api.decompress(plain(files[level].data))     # the level's file less its own correction
        assert np.array_equal(pixels(a), pixels(b))
        assert np.array_equal(pixels(a), pixels(api.decompress(bitstream.truncate(full, level))))
    assert np.array_equal(pixels(api.decompress(full, level=1)), pixels(api.decompress(full)))
    # The levels really differ (otherwise the checks above prove nothing).
    assert not np.array_equal(pixels(api.decompress(full)), pixels(api.decompress(files[3].data)))


@pytest.mark.parametrize("level", [1, 2, 3])
def test_the_colour_correction_brings_the_decoding_closer(tiny, big_img, level, plain):
    data = api.compress(big_img, tiny, level=level)
    ref = np.asarray(big_img, dtype=np.float64)
    err = [((np.asarray(api.decompress(d), dtype=np.float64) - ref) ** 2).mean() for d in (data, plain(data))]
    assert err[0] < 0.9 * err[1], err
    kind, g, _ = colour.parse(bitstream.read(data).extras[bitstream.COLOUR_TAG], 3)
    assert kind in (0, 1) and g in colour.GRIDS


def test_a_model_without_a_log_slope_sends_no_colour_correction(tiny, photo_img, monkeypatch, plain):
    with_map = api.compress(photo_img, tiny, level=2)
    monkeypatch.delitem(tiny.info, "colour_log_slope")
    assert codec.colour_log_slope(tiny) is None
    assert api.compress(photo_img, tiny, level=2) == plain(with_map)
    assert api.compress_file(photo_img, tiny, bpp=1.0).data == plain(api.compress(photo_img, tiny, level=1))


def test_a_corrupt_colour_correction_is_a_format_error(files):
    c = bitstream.read(files[1].data)
    bad = bitstream.write(replace(c, extras={**c.extras, bitstream.COLOUR_TAG: b"\x06\x80"}))
    for level in (None, 2):                          # checked even where it is not applied
        with pytest.raises(FormatError, match="^corrupt file: bad colour correction$"):
            api.decompress(bad, level=level)


def test_level_not_in_file(files):
    with pytest.raises(ValueError, match="level 1 not in file"):
        api.decompress(files[2].data, level=1)


@pytest.mark.parametrize("level", [2, 3])
def test_truncate_equals_coding_at_that_level(files, level, plain):
    cut = bitstream.truncate(files[1].data, level)
    # The same bytes, not just the same pixels, but for the colour correction, which
    # describes one cut: the level's own file carries its own, a cut file none.
    assert bitstream.COLOUR_TAG in bitstream.read(files[level].data).extras
    assert cut == plain(files[level].data)
    assert np.array_equal(pixels(api.decompress(cut)), pixels(api.decompress(plain(files[level].data))))


def test_codes_survive_the_coder(tiny, big_img):
    """The decoder recovers exactly the codes the encoder saw, at every level."""
    x, _ = to_tensor(big_img)
    codes = tiny.model.encode(pad_to(x, 16))
    segs, _ = codec.compress_codes(tiny, codes, 0)
    shapes = codec.level_shapes(tiny, (256, 384))
    assert shapes == [tuple(c.shape[1:]) for c in codes]
    back = codec.decompress_codes(tiny, segs, shapes)
    assert len(back) == 3
    for got, want in zip(back, reversed(codes)):
        assert torch.equal(got, want)
    # Only the top levels: what is there is still exact.
    back2 = codec.decompress_codes(tiny, segs[:2], shapes)
    assert torch.equal(back2[0], codes[2]) and torch.equal(back2[1], codes[1])


@pytest.mark.parametrize("descent", ["hqa", "mean"])
def test_decoded_image_is_the_models_decoding(tiny, big_img, descent, monkeypatch, plain):
    monkeypatch.setitem(tiny.info, "descent", descent)
    data = plain(api.compress(big_img, tiny, level=2))
    x, _ = to_tensor(big_img)
    codes = tiny.model.encode(x)
    with torch.no_grad():
        if descent == "mean":
            want = tiny.model.decode_mean(1, codes[1]).clamp(0, 1)
        else:
            down = tiny.model64.descend(1, codes[1])
            want = tiny.model.predict(0, down[0]).clamp(0, 1)
    want = (want[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(pixels(api.decompress(data)), want)


def test_encoding_is_deterministic(tiny, photo_path, photo_img):
    a = api.compress(photo_img, tiny)
    b = api.compress(photo_img.copy(), tiny)
    c = api.compress(photo_path, tiny, level=1)
    assert a == b == c


def test_api_checks_arguments(tiny, photo_img):
    with pytest.raises(ValueError, match="level or bpp"):
        api.compress(photo_img, tiny, level=1, bpp=0.5)
    for bad in (0, 4):
        with pytest.raises(ValueError, match="level must be in 1..3"):
            api.compress(photo_img, tiny, level=bad)


def test_bpp_picks_the_finest_cut_under_target(tiny, files, photo_img, plain):
    px = 96 * 64
    cuts = codec.file_cuts(plain(files[1].data), tiny)      # finest first, no corrections
    assert [(lv, g) for _, lv, g in cuts] == [(lv, g) for lv in (1, 2, 3) for g in (0, 3, 2, 1)]
    own = []                                                # each cut coded alone: with its correction
    for data, lv, g in cuts:                                # one pass, the bytes of coding each cut
        own.append(codec.compress_image(tiny, photo_img, lv, groups=g).data)
        assert data == plain(own[-1])
    # Cut from a file: the same, but the whole file keeps its own correction.
    assert [d for d, _, _ in codec.file_cuts(files[1].data, tiny)] == [files[1].data] + [d for d, _, _ in cuts[1:]]
    rates = [8 * len(d) / px for d, _, _ in cuts]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == len(rates)
    for i, rate in enumerate(rates):
        for target in (rate, (rate + rates[i - 1]) / 2 if i else rate + 1):
            res = api.compress_file(photo_img, tiny, bpp=target)
            # The finest cut that fits without a correction; with it where it still fits.
            fits = 8 * len(own[i]) / px <= target
            assert (res.data, res.level, res.groups, res.note) == \
                (own[i] if fits else cuts[i][0], *cuts[i][1:], ""), target
            assert res.bpp <= target
    assert api.compress_file(photo_img, tiny, bpp=rates[0] + 1).data == files[1].data
    res = api.compress_file(photo_img, tiny, bpp=rates[-1] / 2)
    assert (res.data, res.level, res.groups) == cuts[-1]
    assert res.note.startswith("no level reaches") and "(level 3, 1 of 4 groups," in res.note


def test_scored_cuts_score_what_each_file_decodes_to(tiny, photo_img):
    """Every cut, finest first, as its own encode writes it (colour correction
    included), scored with the training distortion of the image its file decodes to."""
    from hvqc.losses import image_distortion
    scored = codec.scored_cuts(tiny, photo_img)
    assert [(lv, g) for _, lv, g, _ in scored] == [(lv, g) for lv in (1, 2, 3) for g in (0, 3, 2, 1)]
    ref = torch.from_numpy(pixels(photo_img)).permute(2, 0, 1)[None].float() / 255
    for data, lv, g, d in scored:
        assert data == codec.compress_image(tiny, photo_img, lv, groups=g).data
        out = torch.from_numpy(pixels(api.decompress(data))).permute(2, 0, 1)[None].float() / 255
        assert d == pytest.approx(float(image_distortion(out, ref)), rel=1e-5, abs=1e-6)
    ds = [d for _, _, g, d in scored if g == 0]
    assert ds == sorted(ds)                       # coarser levels decode worse


def test_lambda_picks_the_least_distortion_plus_rate(tiny, photo_img):
    px = 96 * 64
    scored = codec.scored_cuts(tiny, photo_img)
    picked = []
    for lam in (1e-6, 0.3, 1, 3, 10, 30, 1e6):
        res = api.compress_file(photo_img, tiny, lam=lam)
        want = min(scored, key=lambda c: c[3] + lam * 8 * len(c[0]) / px)
        assert (res.data, res.level, res.groups) == want[:3], lam
        assert res.bpp == 8 * len(res.data) / px and res.note == ""
        c = bitstream.read(res.data).header
        assert (c.levels[-1], c.groups) == (res.level, res.groups)
        picked.append(res)
    assert (picked[0].level, picked[0].groups) == min(scored, key=lambda c: c[3])[1:3]
    assert len(picked[-1].data) == min(len(c[0]) for c in scored)
    rates = [r.bpp for r in picked]
    assert rates == sorted(rates, reverse=True)   # a steeper slope never buys more bits
    assert api.compress(photo_img, tiny, lam=3) == picked[3].data
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="lambda must be positive"):
            codec.compress_image_rd(tiny, photo_img, bad)
    with pytest.raises(ValueError, match="only one of level or bpp or lam"):
        api.compress(photo_img, tiny, bpp=0.5, lam=3)


def _assert_cut_of_searched_level(lm, img, search, data, level, groups):
    """``data`` is the cut ``(level, groups)`` of the file of ``level`` searched whole:
    that file itself for the whole level, the same coder segments for a refinement."""
    whole = codec.compress_image(lm, img, level, search=search).data
    if not groups:
        assert data == whole
    cut = [d for d, lv, g in codec.file_cuts(whole, lm) if (lv, g) == (level, groups)][0]
    assert bitstream.read(data).segments == bitstream.read(cut).segments


def test_lambda_with_search_scores_each_levels_own_searched_codes(tiny, photo_img, monkeypatch):
    """With the search, a level's cuts (the level and its refinements) come from codes
    searched for that whole level."""
    from hvqc.search import SearchSettings
    s = SearchSettings(steps=2, lr=0.1)
    monkeypatch.setitem(tiny.info, "descent", "mean")        # every level searchable
    scored = codec.scored_cuts(tiny, photo_img, search=s)
    assert [(lv, g) for _, lv, g, _ in scored] == [(lv, g) for lv in (1, 2, 3) for g in (0, 3, 2, 1)]
    for data, lv, g, _ in scored:
        _assert_cut_of_searched_level(tiny, photo_img, s, data, lv, g)
    monkeypatch.setitem(tiny.info, "descent", "hqa")         # level 1 only: its codes for every cut
    scored = codec.scored_cuts(tiny, photo_img, search=s)
    for data, lv, g, _ in scored[4:]:
        searched = codec.compress_image(tiny, photo_img, 1, search=s).data
        cut = [d for d, l2, g2 in codec.file_cuts(searched, tiny) if (l2, g2) == (lv, g)][0]
        assert bitstream.read(data).segments == bitstream.read(cut).segments


def test_lambda_with_search_searches_for_the_same_trade_off(tiny, photo_img, monkeypatch):
    """``--lambda`` with ``--search``: the levels that can win are searched with the rate
    weight lambda (the settings' own weight is not used) and the cut is picked from the
    plain whole levels and those levels' searched files; where that pick is a refinement,
    the refinement is searched as it decodes too, and the better of the two files by the
    same objective is kept."""
    from hvqc import losses
    from hvqc import search as search_mod
    from hvqc.search import SearchSettings
    monkeypatch.setitem(tiny.info, "descent", "mean")        # every level searchable
    monkeypatch.setattr(codec, "SCREEN_MARGIN", float("inf"))   # every level searched
    monkeypatch.setattr(codec, "SCREEN_MARGIN_TOP", float("inf"))
    s = SearchSettings(steps=2, lr=0.1, lam=1.0)
    seen = []
    real = search_mod.search_codes
    monkeypatch.setattr(codec, "search_codes",
                        lambda *a, **k: seen.append((a[3], a[6].lam, k.get("groups", 0))) or real(*a, **k))
    x = to_tensor(photo_img)[0]
    plain = [(codec.compress_image(tiny, photo_img, lv).data, lv, 0) for lv in (1, 2, 3)]
    for lam in (0.03, 3.0):                                   # the untrained model picks refinements
        seen.clear()
        data, lv, g = codec.compress_image_rd(tiny, photo_img, lam, search=s)
        seen_rd = list(seen)
        seen.clear()
        cuts = codec.scored_cuts(tiny, photo_img, search=replace(s, lam=lam))
        screened = codec.screened_cuts(tiny, photo_img, lam, search=replace(s, lam=lam))
        assert [c[:3] for c in screened[:3]] == plain          # the plain whole levels first ...
        assert screened[3:] == cuts                             # ... then every searched cut
        _, lv0, g0 = codec.pick_rd(screened, lam, 96 * 64)
        assert g0
        assert seen_rd == [(0, lam, 0), (1, lam, 0), (2, lam, 0), (lv0 - 1, lam, g0)]
        refined = codec.compress_image(tiny, photo_img, lv0, groups=g0, search=replace(s, lam=lam)).data
        y = torch.from_numpy(np.array(api.decompress(refined, model=tiny))).permute(2, 0, 1)[None] / 255
        d = float(losses.image_distortion(y.float(), x))
        want = codec.pick_rd(screened + [(refined, lv0, g0, d)], lam, 96 * 64)
        assert (data, lv, g) == want
        seen.clear()
        assert api.compress(photo_img, tiny, lam=lam, search=s) == data
    monkeypatch.setitem(tiny.info, "descent", "hqa")          # level 1 only: a coarser pick is not searched
    seen.clear()
    _, lv, g = codec.compress_image_rd(tiny, photo_img, 3.0, search=s)
    assert lv > 1 and seen == [(0, 3.0, 0)]
    assert s.lam == 1.0                                       # the caller's settings untouched


@pytest.mark.parametrize("margin,top_margin", [(0.0, 0.0), (0.3, 0.3), (0.0, 0.5), (0.5, 0.0)])
def test_lambda_with_search_searches_only_the_levels_that_can_win(tiny, photo_img, monkeypatch, margin,
                                                                  top_margin):
    """The screen: a level is searched only if its plain whole file's distortion + lambda x
    bpp is within SCREEN_MARGIN (relative) of the best level's, SCREEN_MARGIN_TOP for the
    top level; the cuts offered are the plain whole levels and the searched levels' own
    cuts, each as its own encode writes it."""
    from hvqc.losses import image_distortion
    from hvqc.search import SearchSettings
    monkeypatch.setitem(tiny.info, "descent", "mean")
    monkeypatch.setattr(codec, "SCREEN_MARGIN", margin)
    monkeypatch.setattr(codec, "SCREEN_MARGIN_TOP", top_margin)
    s = SearchSettings(steps=2, lr=0.1)
    px = 96 * 64
    ref = to_tensor(photo_img)[0]
    for lam in (0.03, 0.3, 3.0):
        s_lam = replace(s, lam=lam)
        cost = {}
        for lv in (1, 2, 3):
            data = codec.compress_image(tiny, photo_img, lv).data
            y = torch.from_numpy(np.array(api.decompress(data, model=tiny))).permute(2, 0, 1)[None] / 255
            cost[lv] = float(image_distortion(y.float(), ref)) + lam * 8 * len(data) / px
        best = min(cost.values())
        chosen = [lv for lv in (1, 2, 3) if cost[lv] <= best * (1 + (top_margin if lv == 3 else margin))]
        assert chosen and (margin or top_margin or len(chosen) == 1)
        screened = codec.screened_cuts(tiny, photo_img, lam, search=s_lam)
        whole, searched = screened[:3], screened[3:]
        for (data, lv, g, d) in whole:
            assert g == 0 and d + lam * 8 * len(data) / px == pytest.approx(cost[lv], rel=1e-5)
        assert sorted({lv for _, lv, _, _ in searched}) == chosen
        for data, lv, g, _ in searched:
            _assert_cut_of_searched_level(tiny, photo_img, s_lam, data, lv, g)
    assert codec.screened_cuts(tiny, photo_img, 3.0) == codec.scored_cuts(tiny, photo_img)  # no search


def test_a_refinement_decodes_through_the_prior_mean(tiny, photo_img, plain):
    x, _ = to_tensor(photo_img)
    codes = tiny.model.encode(x)
    data = plain(codec.compress_image(tiny, photo_img, 1, groups=2).data)
    known = tiny.model.levels[0].prior.sent(codes[0].shape[1:], 2)
    with torch.no_grad():
        want = tiny.model.decode_mean(0, torch.where(known, codes[0], 0), known, codes[1]).clamp(0, 1)
        # codes at the positions the file does not hold never reach the decoder
        same = tiny.model.decode_mean(0, torch.where(known, codes[0], 7), known, codes[1]).clamp(0, 1)
    assert torch.equal(want, same)
    want = (want[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(pixels(api.decompress(data)), want)
    # Its coarser levels decode as those levels' own files do.
    assert np.array_equal(pixels(api.decompress(data, level=2)),
                          pixels(api.decompress(plain(api.compress(photo_img, tiny, level=2)))))
    assert bitstream.truncate(data, 2) == plain(api.compress(photo_img, tiny, level=2))
    for bad in (-1, 4):
        with pytest.raises(ValueError, match="groups must be in 1..3"):
            codec.compress_image(tiny, photo_img, 1, groups=bad)


def test_a_refinement_claiming_every_group_is_corrupt(tiny, photo_img):
    c = bitstream.read(codec.compress_image(tiny, photo_img, 1, groups=3).data)
    forged = bitstream.write(bitstream.Container(replace(c.header, groups=4), c.segments, c.extras))
    with pytest.raises(bitstream.FormatError, match="4 coding groups of level 1, which has 4"):
        api.decompress(forged)


@pytest.mark.parametrize("descent", ["hqa", "mean"])
def test_same_result_across_thread_counts(tiny, big_img, descent, monkeypatch):
    monkeypatch.setitem(tiny.info, "descent", descent)
    before = torch.get_num_threads()
    try:
        out = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            data = api.compress(big_img, tiny)
            out[n] = (data, pixels(api.decompress(data)),
                      pixels(api.decompress(data, level=3)))
    finally:
        torch.set_num_threads(before)
    assert out[1][0] == out[2][0]
    assert np.array_equal(out[1][1], out[2][1])
    assert np.array_equal(out[1][2], out[2][2])


def test_payload_matches_prior_estimate(tiny, big_img):
    res = codec.compress_image(tiny, big_img, 1)
    assert len(res.payload_bytes) == 3
    for lv, n, bits in zip(res.levels, res.payload_bytes, res.estimated_bits):
        ideal = bits / 8
        assert abs(n - ideal) <= 0.005 * ideal + 8, f"level {lv}: {n} bytes vs ideal {ideal:.1f}"


def test_coder_ignores_memory_layout():
    """The codec hands the coder transposed (column-major) tables; they must code as
    the same table, i.e. at their ideal cost and to the same bytes as a C-order copy."""
    rng = np.random.default_rng(0)
    pmf = entropy.pmf_from_logits(np.asfortranarray(rng.normal(size=(4000, 32)) * 4))
    assert pmf.flags.f_contiguous and not pmf.flags.c_contiguous
    cdf = np.cumsum(pmf, 1)
    sym = (cdf <= rng.integers(0, 1 << entropy.PRECISION, size=(4000, 1))).sum(1)
    data = entropy.encode_symbols(sym, pmf)
    assert data == entropy.encode_symbols(sym, np.ascontiguousarray(pmf))
    ideal = entropy.cost_bits(sym, pmf) / 8
    assert abs(len(data) - ideal) <= 0.005 * ideal + 8
    assert np.array_equal(entropy.decode_symbols(data, pmf), sym)


@pytest.mark.parametrize("level", [1, 3])
def test_channels_last_weights_change_only_rounding(tiny, big_img, level):
    """The loaded model runs channels-last (:func:`hvqc.zoo.load`, for speed); the same
    weights in the default layout must give the same file and, up to float rounding,
    the same signal from it (the coder's inputs come from the float64 copy)."""
    conv = [p for p in tiny.model.parameters() if p.dim() == 4]
    assert conv and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
    assert all(p.is_contiguous() and p.dtype == torch.float64 for p in tiny.model64.parameters())
    plain = replace(tiny, model=copy.deepcopy(tiny.model).to(memory_format=torch.contiguous_format))
    files = [codec.compress_image(lm, big_img, level).data for lm in (tiny, plain)]
    assert files[0] == files[1]
    c = bitstream.read(files[0])
    ys = [codec.decode_levels(lm, c) for lm in (tiny, plain)]
    assert torch.allclose(ys[0], ys[1], rtol=0, atol=1e-5)


# --- golden --------------------------------------------------------------------

def test_golden_file(tiny, photo_path):
    data = api.compress(photo_path, tiny, level=1)
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256
    assert bitstream.COLOUR_TAG in bitstream.read(data).extras      # the golden file covers it


# --- odd images ----------------------------------------------------------------

def _rgb(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _alpha(w, h, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _save(img, tmp_path, name, **kw):
    p = tmp_path / name
    img.save(p, **kw)
    return p


def _round(tiny, src, level=1):
    return api.decompress(api.compress(src, tiny, level=level))


@pytest.mark.parametrize("size", [(1, 1), (1, 257), (257, 1), (17, 5)])
def test_tiny_and_thin_images(tiny, size):
    for level in (1, 3):
        out = _round(tiny, _rgb(*size), level)
        assert out.size == size and out.mode == "RGB"


def test_gray(tiny, tmp_path):
    p = _save(_rgb(31, 19).convert("L"), tmp_path, "g.png")
    out = _round(tiny, p)
    assert out.mode == "L" and out.size == (31, 19)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_comes_back_exactly(tiny, tmp_path, mode):
    a = _alpha(29, 23)
    img = _rgb(29, 23).convert(mode[:-1])
    img.putalpha(Image.fromarray(a, "L"))
    p = _save(img, tmp_path, "a.png")
    for level in (1, 2):
        out = _round(tiny, p, level)
        assert out.mode == mode and out.size == (29, 23)
        assert np.array_equal(np.asarray(out.getchannel("A")), a)


def test_16_bit(tiny, tmp_path):
    arr = (np.arange(21 * 34).reshape(21, 34) * 91 % 65536).astype("<u2")
    img = Image.frombytes("I;16", (34, 21), arr.tobytes())
    p = _save(img, tmp_path, "g16.png")
    assert Image.open(p).mode in ("I;16", "I")
    out = _round(tiny, p)
    assert out.mode == "I;16" and out.size == (34, 21)
    assert np.asarray(out).dtype == np.uint16
    out.save(io.BytesIO(), format="PNG")          # what the CLI does with it
    # In memory, straight from a 32-bit "I" image too (clipped to 16 bits).
    wide = Image.fromarray(np.full((5, 7), 70000, np.int32))
    assert wide.mode == "I"
    out = _round(tiny, wide)
    assert out.mode == "I;16" and out.size == (7, 5)


def test_palette(tiny, tmp_path):
    p = _save(_rgb(25, 14).convert("P"), tmp_path, "p.png")
    assert Image.open(p).mode == "P"
    out = _round(tiny, p)
    assert out.mode == "RGB" and out.size == (25, 14)


def test_palette_with_transparency(tiny, tmp_path):
    img = _rgb(25, 14).quantize(16)
    p = _save(img, tmp_path, "pt.png", transparency=3)
    src = Image.open(p)
    assert src.mode == "P" and "transparency" in src.info
    want_alpha = np.asarray(src.convert("RGBA").getchannel("A"))
    assert (want_alpha == 0).any() and (want_alpha == 255).any()
    out = _round(tiny, p)
    assert out.mode == "RGBA" and out.size == (25, 14)
    assert np.array_equal(np.asarray(out.getchannel("A")), want_alpha)


def test_cmyk_jpeg(tiny, tmp_path):
    p = _save(_rgb(30, 20).convert("CMYK"), tmp_path, "c.jpg", quality=90)
    assert Image.open(p).mode == "CMYK"
    out = _round(tiny, p)
    assert out.mode == "RGB" and out.size == (30, 20)


def test_exif_orientation_is_applied(tiny, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6                                  # rotate 90 degrees clockwise to display
    p = _save(_rgb(40, 24), tmp_path, "o.jpg", exif=exif)
    assert Image.open(p).size == (40, 24)
    data = api.compress(p, tiny)
    h = bitstream.read(data).header
    assert (h.width, h.height) == (24, 40)
    out = api.decompress(data)
    assert out.size == (24, 40) and out.mode == "RGB"


# --- bad files -----------------------------------------------------------------

def test_bad_magic(files):
    data = b"JUNK" + files[1].data[4:]
    with pytest.raises(FormatError, match="bad magic"):
        api.decompress(data)


def test_truncated(files):
    data = files[1].data
    for n in (len(data) - 1, len(data) // 2, 10):
        with pytest.raises(FormatError, match="truncated file"):
            api.decompress(data[:n])


def test_crc_flip(files):
    data = bytearray(files[1].data)
    data[len(data) // 2] ^= 0x10
    with pytest.raises(FormatError, match="CRC32 mismatch"):
        api.decompress(bytes(data))


def _rewrite(data: bytes, **changes) -> bytes:
    c = bitstream.read(data)
    return bitstream.write(replace(c, header=replace(c.header, **changes)))


def test_unknown_model(files):
    with pytest.raises(ModelError, match="unknown model 'nosuch' \\(known: tiny, tiny-gray, tiny-speech\\)"):
        api.decompress(_rewrite(files[1].data, model="nosuch"))


def test_wrong_weights_hash(tiny, files):
    data = _rewrite(files[1].data, weights_hash=bytes.fromhex("01020304"))
    with pytest.raises(ModelError, match=f"coded with model tiny@01020304 but the installed one "
                                         f"is tiny@{tiny.hash_prefix.hex()}"):
        api.decompress(data)


def test_wrong_level_count(files):
    c = bitstream.read(files[2].data)
    h = replace(c.header, num_levels=4, levels=(4, 3))
    data = bitstream.write(replace(c, header=h))
    with pytest.raises(ModelError, match="file expects 4 levels, model 'tiny' has 3"):
        api.decompress(data)


def test_forged_payload_with_valid_crc(files):
    # A range coder cannot see where its stream ends (the container's lengths and CRC32
    # guard the payload): a forged segment under a valid CRC decodes to other codes, or
    # fails with a FormatError, never another exception.
    c = bitstream.read(files[1].data)
    seg = c.segments[-1]
    for bad in (seg + b"\x00", seg + b"\xff" * 5, seg[:-1], seg[:1], b""):
        forged = bitstream.write(replace(c, segments=(*c.segments[:-1], bad)))
        try:
            img = api.decompress(forged)
        except FormatError:
            continue
        assert img.size == (c.header.width, c.header.height)


def test_missing_alpha_plane(tiny, photo_img):
    img = photo_img.convert("RGBA")
    c = bitstream.read(api.compress(img, tiny, level=3))
    assert codec.ALPHA_TAG in c.extras
    with pytest.raises(FormatError, match="alpha plane missing"):
        api.decompress(bitstream.write(replace(c, extras={})))
    bad = bitstream.write(replace(c, extras={codec.ALPHA_TAG: b"not zlib"}))
    with pytest.raises(FormatError, match="alpha plane does not inflate"):
        api.decompress(bad)


def test_speech_file_is_not_an_image(files):
    data = _rewrite(files[3].data, modality=1, sample_rate=16000)
    with pytest.raises(FormatError, match="not an image file"):
        api.decompress(data)


# --- limits and the model registry (review regressions) -------------------------

def test_decode_refuses_a_size_no_encoder_writes(files):
    # A crafted file with a valid CRC claiming 8000x8000 (64M pixels): refused from the
    # header, before any model runs or any buffer is allocated.
    data = _rewrite(files[1].data, width=8000, height=8000)
    with pytest.raises(FormatError, match="refusing to decode 8000x8000: more than 40000000 pixels"):
        api.decompress(data)


def test_encode_refuses_an_over_wide_image_before_coding(tiny):
    # 70000x1 is few pixels but wider than the container allows: refused up front,
    # with the same "image too large" message as a too-big image.
    with pytest.raises(ValueError, match="image too large: 70000x1 exceeds 65536 pixels on a side"):
        api.compress(Image.new("RGB", (70000, 1)), tiny)


def test_animated_gif_codes_its_first_frame(tiny, tmp_path):
    frames = [_rgb(24, 16).point(lambda v, i=i: (v + 80 * i) % 256) for i in range(3)]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(p).n_frames == 3
    first = Image.open(p).convert("RGB")              # frame 0
    assert api.compress(p, tiny) == api.compress(first, tiny)


def test_bad_manifest_is_a_model_error(monkeypatch, tmp_path):
    from hvqc import zoo
    monkeypatch.setenv("HVQC_WEIGHTS", str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"models": ')
    with pytest.raises(ModelError, match="manifest .* is unreadable"):
        zoo.manifest()
    (tmp_path / "manifest.json").write_text('{"models": {"m": {"file": "m.safetensors"}}}')
    with pytest.raises(ModelError, match="model 'm' needs \"file\" and \"sha256\""):
        zoo.load("m")


def test_verified_weights_that_do_not_load_are_a_model_error(monkeypatch, tmp_path):
    from hvqc import zoo
    monkeypatch.setenv("HVQC_WEIGHTS", str(tmp_path))
    junk = b"not safetensors at all"
    (tmp_path / "junk.safetensors").write_bytes(junk)
    entry = {"file": "junk.safetensors", "sha256": hashlib.sha256(junk).hexdigest()}
    (tmp_path / "manifest.json").write_text(json.dumps({"models": {"junk": entry}}))
    with pytest.raises(ModelError, match="weights for model 'junk' do not load"):
        zoo.load("junk")
