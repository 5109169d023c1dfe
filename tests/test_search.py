"""The encoder's search (hvqc.search) and what it rests on: the quantizer's relaxation,
the prior's per-position log-probabilities, the distortion by image size, and the codec
and CLI paths that use it."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hvqc import api, codec, colour, losses
from hvqc.coding import read_codes
from hvqc.bitstream import COLOUR_TAG, read
from hvqc.image import pad_to, to_tensor
from hvqc.prior import ContextPrior
from hvqc.quantize import GumbelQuantizer
from hvqc.search import SearchSettings, search_codes


@pytest.fixture(scope="module")
def big_img(photo_path) -> Image.Image:
    return Image.open(photo_path).convert("RGB").resize((200, 136), Image.BICUBIC)


def objective(model, x, codes, level, lam, size, crop):
    """distortion + lam * bits / size of one level's codes, computed the plain way:
    the model's own decoding and its prior's training-time cross-entropy."""
    with torch.no_grad():
        q = model.levels[level].quantizer.decode(codes[level])
        y = model.levels[0].decoder(q) if level == 0 else model.signal_mean(level, q)
        region = (..., slice(0, crop[0]), slice(0, crop[1]))
        d = losses.image_distortion(y[region], x[region]).item()
        cond = model.predict(level + 1, codes[level + 1]) if level + 1 < model.num_levels else None
        bits = model.levels[level].prior(codes[level], cond).item() * codes[level].numel()
    return d + lam * bits / size


def _item(tiny, img):
    x, _ = to_tensor(img)
    xp = pad_to(x, tiny.model.config.stride(tiny.model.num_levels - 1))
    return xp, tiny.model.encode(xp)


@pytest.mark.parametrize("level,descent", [(0, "hqa"), (1, "mean")])
@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_search_never_scores_worse_than_the_encoder(tiny, big_img, level, descent, lam, monkeypatch):
    monkeypatch.setitem(tiny.info, "descent", descent)
    xp, codes = _item(tiny, big_img)
    size, crop = big_img.width * big_img.height, (big_img.height, big_img.width)
    found = search_codes(tiny.model, xp, codes, level, losses.image_distortion, size,
                         SearchSettings(steps=8, lam=lam, lr=0.1), crop)
    before = objective(tiny.model, xp, codes, level, lam, size, crop)
    after = objective(tiny.model, xp, found, level, lam, size, crop)
    assert after <= before + 1e-6
    if level == 0:                  # the untrained model's upper levels sit on one code
        assert not torch.equal(found[level], codes[level])
    for l in range(tiny.model.num_levels):                    # only that level changes
        if l != level:
            assert found[l] is codes[l]


def test_search_leaves_the_model_alone(tiny, big_img):
    xp, codes = _item(tiny, big_img)
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    search_codes(tiny.model, xp, codes, 0, losses.image_distortion, 1.0, SearchSettings(steps=3))
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in tiny.model.parameters())


def test_zero_steps_is_the_encoder(tiny, photo_img):
    plain = codec.compress_image(tiny, photo_img, 1).data
    assert codec.compress_image(tiny, photo_img, 1, search=SearchSettings(steps=0)).data == plain
    assert api.compress(photo_img, tiny, search=0) == plain


@pytest.mark.parametrize("level", [1, 2])
def test_a_searched_file_carries_the_searched_codes(tiny, big_img, level, monkeypatch):
    """The file holds exactly the codes the search found and decodes as any file does."""
    monkeypatch.setitem(tiny.info, "descent", "mean")
    s = SearchSettings(steps=5, lr=0.1)
    res = codec.compress_image(tiny, big_img, level, search=s)
    xp, codes = _item(tiny, big_img)
    found = search_codes(tiny.model, xp, codes, level - 1, losses.image_distortion,
                         big_img.width * big_img.height, s, (big_img.height, big_img.width))
    c = read(res.data)
    back = read_codes(tiny, c, len(c.header.levels))
    assert torch.equal(back[-1], found[level - 1])
    assert torch.equal(back[0], codes[-1])                    # the levels above: the encoder's
    with torch.no_grad():
        want = tiny.model.decode_mean(level - 1, found[level - 1]) if level > 1 else \
            tiny.model.predict(0, found[0])
    want = want[..., :big_img.height, :big_img.width]
    assert COLOUR_TAG in c.extras                             # fitted to the searched codes' decoding
    want = colour.apply(want, c.extras[COLOUR_TAG])
    want = (want.clamp(0, 1)[0].permute(1, 2, 0) * 255).round()
    assert np.array_equal(np.asarray(api.decompress(res.data, model=tiny)), want.to(torch.uint8).numpy())


def refinement_objective(model, x, codes, level, groups, lam, size, crop):
    """distortion + lam * bits / size of a refinement (the first ``groups`` coding groups of
    ``level``), computed the way a file of it decodes (:meth:`decode_mean` with the sent
    positions known) and pays (the prior's bits at the sent positions only)."""
    with torch.no_grad():
        low = codes[level]
        known = model.levels[level].prior.sent(low.shape[1:], groups)
        upper = codes[level + 1] if level + 1 < model.num_levels else None
        y = model.decode_mean(level, low * known, known, upper)
        region = (..., slice(0, crop[0]), slice(0, crop[1]))
        d = losses.image_distortion(y[region], x[region]).item()
        cond = None if upper is None else model.predict(level + 1, upper)
        lp = model.levels[level].prior.log_probs(low, cond)             # [1, K, *S]
        bits = -lp.gather(1, low[:, None])[0, 0][known].sum().item() / math.log(2)
    return d + lam * bits / size


@pytest.mark.parametrize("level,groups", [(0, 1), (1, 2)])
def test_refinement_search_never_scores_worse_than_the_encoder(tiny, big_img, level, groups, monkeypatch):
    """Searching for a refinement scores it as its file decodes: the unsent positions
    the prior's mean given the sent ones, only the sent groups' bits paid."""
    monkeypatch.setitem(tiny.info, "descent", "mean")
    xp, codes = _item(tiny, big_img)
    size, crop = big_img.width * big_img.height, (big_img.height, big_img.width)
    s = SearchSettings(steps=8, lam=2.0, lr=0.1)
    found = search_codes(tiny.model, xp, codes, level, losses.image_distortion, size, s, crop, groups=groups)
    before = refinement_objective(tiny.model, xp, codes, level, groups, 2.0, size, crop)
    after = refinement_objective(tiny.model, xp, found, level, groups, 2.0, size, crop)
    assert after <= before + 1e-6
    known = tiny.model.levels[level].prior.sent(codes[level].shape[1:], groups)
    assert not torch.equal(found[level][:, known], codes[level][:, known])
    whole = search_codes(tiny.model, xp, codes, level, losses.image_distortion, size, s, crop)
    assert not torch.equal(found[level], whole[level])        # not the whole level's search


def test_a_searched_refinement_carries_its_own_codes(tiny, big_img, monkeypatch):
    monkeypatch.setitem(tiny.info, "descent", "mean")
    s = SearchSettings(steps=5, lr=0.1)
    res = codec.compress_image(tiny, big_img, 1, groups=2, search=s)
    xp, codes = _item(tiny, big_img)
    found = search_codes(tiny.model, xp, codes, 0, losses.image_distortion,
                         big_img.width * big_img.height, s, (big_img.height, big_img.width), groups=2)
    c = read(res.data)
    assert c.header.groups == 2
    back = read_codes(tiny, c, len(c.header.levels))[-1]
    known = tiny.model.levels[0].prior.sent(codes[0].shape[1:], 2)
    assert torch.equal(back[:, known], found[0][:, known])


def test_bpp_with_search_searches_the_cut_it_picks(tiny, big_img, plain, monkeypatch):
    """``--bpp`` picks the cut from the encoder's codes, then searches that cut (level or
    refinement) and keeps the searched file where it fits the budget, else the plain one."""
    monkeypatch.setitem(tiny.info, "descent", "mean")
    s = SearchSettings(steps=4, lr=0.1)
    px = big_img.width * big_img.height
    cuts = codec.file_cuts(plain(codec.compress_image(tiny, big_img, 1).data), tiny)
    tried = set()
    for i in range(1, len(cuts) - 1):
        data, level, groups = cuts[i]
        finer = 8 * len(cuts[i - 1][0]) / px
        searched = codec.compress_image(tiny, big_img, level, groups=groups, search=s).data
        seen = set()
        for target in (8 * max(len(data), len(plain(searched))) / px, 8 * len(data) / px):
            if target >= finer:
                continue
            res = api.compress_file(big_img, tiny, bpp=target, search=s)
            assert (res.level, res.groups) == (level, groups)
            if 8 * len(plain(searched)) / px <= target:       # with its colour correction if that fits too
                assert res.data == (searched if 8 * len(searched) / px <= target else plain(searched))
                seen.add("searched")
            else:                   # the searched file is over the budget: the plain cut
                assert plain(res.data) == data and res.bpp <= target
                seen.add("plain")
        tried |= seen
    assert tried == {"searched", "plain"}


def test_search_above_level_1_needs_mean_descent(tiny, photo_img, monkeypatch):
    monkeypatch.setitem(tiny.info, "descent", "hqa")
    with pytest.raises(ValueError, match="priors' means"):
        codec.compress_image(tiny, photo_img, 2, search=SearchSettings(steps=2))
    codec.compress_image(tiny, photo_img, 1, search=SearchSettings(steps=2))   # level 1 is fine


def test_settings_are_checked():
    with pytest.raises(ValueError, match="steps"):
        SearchSettings(steps=-1)
    with pytest.raises(ValueError, match="rate weight"):
        SearchSettings(lam=-0.5)


def test_cli_search(cli, tiny, photo_path, tmp_path):
    out = tmp_path / "a.hvqc"
    rc, _, err = cli("encode", photo_path, "-o", out, "-m", "tiny", "--search", "3")
    assert rc == 0, err
    assert api.decompress(out.read_bytes(), model=tiny).size == (96, 64)
    for args, msg in ((["--search", "-1"], "--search must be 0 or more steps, got -1"),
                      (["--search", "2", "-l", "2"], "needs a model decoded through its priors' means")):
        bad = tmp_path / "b.hvqc"
        rc, _, err = cli("encode", photo_path, "-o", bad, "-m", "tiny", *args)
        assert rc != 0 and msg in err and len(err.strip().splitlines()) == 1
        assert not bad.exists()


# --- what the search rests on -------------------------------------------------

def test_relax_is_hard_forward_and_soft_backward():
    torch.manual_seed(0)
    q = GumbelQuantizer(12, 4)
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    quant, w, idx = q.relax(z, tau=0.5)
    assert torch.equal(idx, q.encode(z))
    assert torch.allclose(quant, q.decode(idx), atol=1e-6)
    assert torch.allclose(w, torch.nn.functional.one_hot(idx.flatten(), 12).float(), atol=1e-6)
    (g,) = torch.autograd.grad(quant.sum(), [z])
    rows = torch.nn.functional.normalize(z.movedim(1, -1).reshape(-1, 4), dim=1)
    soft = torch.softmax(-q.sharpness * q.distances(rows) / 0.5, 1)
    (want,) = torch.autograd.grad((soft @ q.codewords()).sum(), [z])
    assert torch.allclose(g, want, atol=1e-6) and g.abs().sum() > 0


@pytest.mark.parametrize("dims,shape", [(2, (5, 7)), (1, (9,)), (2, (1, 1))])
def test_log_probs_are_each_groups_log_softmax(dims, shape):
    torch.manual_seed(1)
    p = ContextPrior(16, 3, dims=dims).double()
    idx = torch.randint(0, 16, (2, *shape))
    cond = torch.randn(2, 3, *shape, dtype=torch.float64)
    want = torch.zeros(2, 16, *shape, dtype=torch.float64)
    for m, lg in p.group_logits(idx, cond):
        want = torch.where(m, torch.log_softmax(lg, 1), want)
    assert torch.allclose(p.log_probs(idx, cond), want, atol=1e-12, rtol=0)
    ce = sum((torch.nn.functional.cross_entropy(lg, idx, reduction="none") * m).sum()
             for m, lg in p.group_logits(idx, cond))
    assert math.isclose(p(idx, cond).item(), ce.item() / (idx.numel() * math.log(2)), rel_tol=1e-12)


def test_image_distortion_by_size():
    torch.manual_seed(2)
    for side, want in ((128, losses.msssim_mse), (97, losses.msssim_mse), (96, losses.ssim_mse),
                       (7, losses.ssim_mse)):
        x = torch.rand(1, 3, side, side + 5)
        y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
        assert losses.image_distortion(y, x).item() == pytest.approx(want(y, x).item())
    x = torch.rand(1, 3, 6, 40)
    y = x + 0.2
    assert losses.image_distortion(y, x).item() == pytest.approx(losses.mse(y.clamp(0, 1), x).item())


def test_search_refuses_an_image_too_large_for_its_gradients(tiny, monkeypatch):
    monkeypatch.setattr(codec, "SEARCH_MAX_PIXELS", 30 * 20 - 1)
    img = Image.new("RGB", (30, 20), (200, 30, 10))
    with pytest.raises(ValueError, match="--search takes images up to"):
        codec.compress_image(tiny, img, 1, search=SearchSettings(steps=2))
    codec.compress_image(tiny, img, 1)                         # without the search it codes
