"""Tests for hvqc.hierarchy with the tiny test configuration."""
import json
import math

import pytest
import torch

from hvqc.hierarchy import HierarchicalVQVAE, HierarchyConfig
from make_tiny import tiny_config


@pytest.fixture(scope="module")
def model() -> HierarchicalVQVAE:
    torch.manual_seed(0)
    return HierarchicalVQVAE(tiny_config()).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))


def test_strides():
    cfg = tiny_config()
    assert [cfg.stride(l) for l in range(3)] == [4, 8, 16]


def test_encode_grids(model, x):
    codes = model.encode(x)
    assert len(codes) == model.num_levels == 3
    for l, c in enumerate(codes):
        s = model.config.stride(l)
        assert c.shape == (1, 64 // s, 96 // s)
        assert c.dtype == torch.int64
        assert 0 <= c.min() and c.max() < model.config.levels[l].codes
    assert [c.shape for c in codes] == [(1, 16, 24), (1, 8, 12), (1, 4, 6)]


def test_encode_matches_latents_and_quantizers(model, x):
    with torch.no_grad():
        zs = model.latents(x)
        codes = model.encode(x)
    for lv, z, c in zip(model.levels, zs, codes):
        assert torch.equal(lv.quantizer.encode(z), c)


@pytest.mark.parametrize("lowest", [1, 2])
def test_encode_from_a_coarser_level_leaves_the_finer_out(model, x, lowest):
    """A coarse cut's codes are the full encode's: each level encodes the latent below
    it, never its codes, so skipping the finer levels' argmins changes nothing."""
    full, coarse = model.encode(x), model.encode(x, lowest)
    assert coarse[:lowest] == [None] * lowest
    for a, b in zip(full[lowest:], coarse[lowest:]):
        assert torch.equal(a, b)


def test_predict_shapes(model, x):
    codes = model.encode(x)
    with torch.no_grad():
        assert model.predict(0, codes[0]).shape == (1, 3, 64, 96)
        assert model.predict(1, codes[1]).shape == (1, 8, 16, 24)
        assert model.predict(2, codes[2]).shape == (1, 8, 8, 12)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_decode_with_lower_levels_given_equals_predict(model, x, level):
    codes = model.encode(x)
    given = {l: codes[l] for l in range(level)}
    with torch.no_grad():
        out = model.decode(level, codes[level], given)
        want = model.predict(0, codes[0])
    assert out.shape == x.shape
    assert torch.equal(out, want)


def test_descend_requantizes_missing_levels(model, x):
    codes = model.encode(x)
    with torch.no_grad():
        down = model.descend(2, codes[2])
        assert sorted(down) == [0, 1, 2] and torch.equal(down[2], codes[2])
        want1 = model.levels[1].quantizer.encode(model.predict(2, codes[2]))
        assert torch.equal(down[1], want1)
        assert torch.equal(down[0], model.levels[0].quantizer.encode(model.predict(1, want1)))
        # A given level is used as is, and what is below it follows from it.
        part = model.descend(2, codes[2], {1: codes[1]})
        assert torch.equal(part[1], codes[1])
        assert torch.equal(part[0], model.levels[0].quantizer.encode(model.predict(1, codes[1])))
        assert torch.equal(model.decode(2, codes[2]), model.predict(0, down[0]))


def test_expected_is_the_priors_mean_codeword(model, x):
    codes = model.encode(x)
    lv = model.levels[0]
    with torch.no_grad():
        cond = model.predict(1, codes[1])
        e = model.expected(0, cond)
        none = torch.zeros(codes[0].shape[1:], dtype=torch.bool)
        p = torch.softmax(lv.prior.logits(torch.zeros_like(codes[0]), none, cond), 1)
    assert e.shape == (1, lv.quantizer.dim, *codes[0].shape[1:])
    for i, j in [(0, 0), (3, 5), (15, 23)]:
        torch.testing.assert_close(e[0, :, i, j], p[0, :, i, j] @ lv.quantizer.codewords())
    assert (e.norm(dim=1) <= 1 + 1e-5).all()            # inside the ball the codewords span
    assert not torch.allclose(e, lv.quantizer.decode(codes[0]))


def test_decode_mean_feeds_each_mean_to_the_level_below(model, x):
    codes = model.encode(x)
    with torch.no_grad():
        assert torch.equal(model.decode_mean(0, codes[0]), model.predict(0, codes[0]))
        q1 = model.expected(1, model.predict(2, codes[2]))
        q0 = model.expected(0, model.levels[1].decoder(q1))
        out = model.decode_mean(2, codes[2])
    assert out.shape == x.shape
    assert torch.equal(out, model.levels[0].decoder(q0))
    assert not torch.allclose(out, model.decode(2, codes[2]))


def test_bits_are_what_the_priors_charge_a_files_codes(model, x):
    """``bits`` is each level's prior cross-entropy of the encoder's codes given the
    prediction from the codes above (what training logs and a file pays), and it trains
    the decoders that condition the priors (the decode stage)."""
    codes = model.encode(x)
    bits = model.bits(codes)
    with torch.no_grad():
        for l in range(model.num_levels):
            cond = model.predict(l + 1, codes[l + 1]) if l + 1 < model.num_levels else None
            lp = model.levels[l].prior.log_probs(codes[l], cond).gather(1, codes[l].unsqueeze(1))
            assert torch.allclose(bits[l], -lp.sum() / (codes[l].numel() * math.log(2))), l
    dec = model.levels[1].decoder.net[0].weight
    (grad,) = torch.autograd.grad(bits[0], [dec])
    assert grad.abs().sum() > 0
    assert bits[-1].grad_fn is not None


def test_decoder_inputs_train_the_priors_and_upper_decoders(model, x):
    """What the decode stage learns from: level 2's mean descent is differentiable in the
    priors it takes means under and in the decoders above level 0."""
    ins = model.decoder_inputs(x, [1, 1, 0])
    params = [model.levels[0].prior.net[-1].weight, model.levels[1].prior.net[-1].weight,
              model.levels[1].decoder.net[0].weight, model.levels[2].decoder.net[0].weight]
    grads = torch.autograd.grad(ins[2].square().sum(), params)
    assert all(g.abs().sum() > 0 for g in grads)


def test_decoder_inputs_are_what_decoding_each_cut_feeds_level_0(model, x):
    """The decoder stage trains on exactly what a file's decoding hands level 0's
    decoder: every whole level (hard codewords at level 0, the priors' means above) and
    each requested refinement."""
    codes = model.encode(x)
    groups = [2, 3, 0]
    with torch.no_grad():
        ins = model.decoder_inputs(x, groups)
        assert len(ins) == model.num_levels + 2
        assert all(q.shape == (1, model.levels[0].quantizer.dim, *codes[0].shape[1:]) for q in ins)
        assert torch.equal(ins[0], model.levels[0].quantizer.decode(codes[0]))
        dec = model.levels[0].decoder
        for l in range(model.num_levels):
            assert torch.equal(dec(ins[l]), model.decode_mean(l, codes[l])), l
        for q, (l, g) in zip(ins[model.num_levels:], [(0, 2), (1, 3)]):
            known = model.levels[l].prior.masks(codes[l].shape[1:])[:g].any(0)
            assert torch.equal(dec(q), model.decode_mean(l, codes[l], known, codes[l + 1])), l
        assert not torch.equal(ins[model.num_levels], ins[0])   # the mean fills the rest


def test_forward_losses_and_gradients():
    torch.manual_seed(2)
    m = HierarchicalVQVAE(tiny_config()).train()
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    out = m(x)
    assert out.x_hat.shape == x.shape
    assert len(out.levels) == len(out.latents) == len(out.indices) == 3
    total = torch.zeros(())
    for i, st in enumerate(out.levels):
        for name in ("recon", "quant", "bits", "perplexity"):
            v = getattr(st, name)
            assert v.shape == () and torch.isfinite(v), f"level {i} {name} = {v}"
        assert st.recon.item() > 0 and st.bits.item() > 0
        assert 1 <= st.perplexity.item() <= m.config.levels[i].codes + 1e-3
        total = total + st.recon + st.quant + st.bits
    for i, (z, idx) in enumerate(zip(out.latents, out.indices)):
        s = m.config.stride(i)
        assert z.shape == (2, m.config.levels[i].dim, 32 // s, 48 // s)
        assert idx.shape == (2, 32 // s, 48 // s)
    total.backward()
    for i, lv in enumerate(m.levels):
        for part in ("encoder", "decoder", "prior"):
            grads = [p.grad for p in getattr(lv, part).parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads), f"level {i} {part}"
            assert sum(g.abs().sum() for g in grads) > 0, f"no gradient reaches level {i} {part}"
        assert lv.quantizer.codebook.grad.abs().sum() > 0


def test_priors_train_on_detached_inputs():
    """The prior's loss must not move the autoencoder (codes and conditioning are detached)."""
    torch.manual_seed(4)
    m = HierarchicalVQVAE(tiny_config()).train()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    out = m(x)
    sum(st.bits for st in out.levels).backward()
    for lv in m.levels:
        for part in (lv.encoder, lv.decoder, lv.quantizer):
            assert all(p.grad is None or p.grad.abs().sum() == 0 for p in part.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lv.prior.parameters())


def test_config_round_trip():
    cfg = tiny_config()
    d = cfg.to_dict()
    assert HierarchyConfig.from_dict(d) == cfg
    back = HierarchyConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg
    assert back.levels[0].codes == 32 and back.levels[1].down == 1 and back.dims == 2
    # A model built from the round-tripped config accepts the original's weights.
    torch.manual_seed(6)
    a = HierarchicalVQVAE(cfg)
    HierarchicalVQVAE(back).load_state_dict(a.state_dict(), strict=True)


def test_signal_levels_decode_every_upper_level_to_pixels_with_gradients(x):
    torch.manual_seed(0)
    m = HierarchicalVQVAE(tiny_config()).train()
    m.init_codebooks(x)
    out = m(x, tau=0.5, signal_levels=True)
    assert len(out.x_hat_levels) == m.num_levels - 1
    assert all(t.shape == x.shape for t in out.x_hat_levels)
    out.x_hat_levels[-1].pow(2).mean().backward()
    top = m.levels[-1].encoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in top.parameters())
    assert m(x, tau=0.5).x_hat_levels == []
