"""Tests for hvqc.prior: coding groups and the context model's causality."""
import math

import pytest
import torch

from hvqc.prior import ContextPrior, phase_masks


@pytest.mark.parametrize("shape,phase", [
    ((6, 8), 2), ((5, 7), 2), ((1, 1), 2), ((1, 9), 2), ((7, 6), 3),
    ((10,), 2), ((9,), 3), ((1,), 2), ((4, 4), 1),
])
def test_phase_masks_partition_the_grid(shape, phase):
    m = phase_masks(shape, phase)
    assert m.dtype == torch.bool
    assert m.shape == (phase ** len(shape), *shape)
    assert torch.equal(m.sum(0), torch.ones(shape, dtype=torch.long))   # each position exactly once


@pytest.mark.parametrize("shape,phase", [((6, 8), 2), ((7, 6), 3), ((10,), 2), ((9,), 3)])
def test_phase_masks_are_regular_interleaved_groups(shape, phase):
    m = phase_masks(shape, phase)
    for g in m:
        assert g.any()
        pos = g.nonzero()
        off = pos[0] % phase
        assert (pos % phase == off).all()      # one offset of the period per group
    # The anchor group (offset 0 on every axis) comes first.
    assert all(int(i) % phase == 0 for i in m[0].nonzero()[0])


def test_2d_phase2_order_is_anchor_then_diagonal():
    m = phase_masks((4, 4), 2)
    offsets = [tuple(int(v) for v in g.nonzero()[0]) for g in m]
    assert offsets == [(0, 0), (1, 1), (0, 1), (1, 0)]


def _prior(dims: int, cond: int, seed: int = 0, k: int = 16, phase: int = 2) -> ContextPrior:
    torch.manual_seed(seed)
    return ContextPrior(k, cond, dims, embed=8, hidden=16, blocks=1, phase=phase).eval()


CASES = [  # dims, cond channels, grid, phase
    (2, 4, (8, 10), 2),
    (2, 0, (7, 9), 2),
    (1, 3, (23,), 2),
    (2, 0, (6, 6), 3),
]


@pytest.mark.parametrize("dims,cond_ch,grid,phase", CASES)
def test_group_logits_ignore_codes_of_the_current_and_later_groups(dims, cond_ch, grid, phase):
    k = 16
    p = _prior(dims, cond_ch, phase=phase, k=k)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, k, (2, *grid), generator=g)
    cond = torch.randn(2, cond_ch, *grid, generator=g) if cond_ch else None
    masks = p.masks(grid)
    with torch.no_grad():
        ref = [lg for _, lg in p.group_logits(idx, cond)]
        for gi in range(len(masks)):
            later = masks[gi:].any(0)
            earlier = masks[:gi].any(0) if gi else torch.zeros(grid, dtype=torch.bool)
            # Codes at this group's and later positions must not matter ...
            other = torch.where(later, torch.randint(0, k, idx.shape, generator=g), idx)
            assert not torch.equal(other, idx)
            lg = list(p.group_logits(other, cond))[gi][1]
            assert torch.equal(lg[..., masks[gi]], ref[gi][..., masks[gi]]), f"group {gi} peeks ahead"
            # ... which is what the decoder relies on: zeros where nothing is known yet.
            dec = p.logits(torch.where(earlier, idx, torch.zeros_like(idx)), earlier, cond)
            assert torch.equal(dec[..., masks[gi]], ref[gi][..., masks[gi]])
            # Codes of earlier groups must matter (the context is used at all).
            if gi:
                changed = torch.where(earlier, (idx + 1) % k, idx)
                lg2 = list(p.group_logits(changed, cond))[gi][1]
                assert not torch.equal(lg2[..., masks[gi]], ref[gi][..., masks[gi]])


def test_first_group_depends_on_cond():
    p = _prior(2, 4)
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 16, (1, 6, 6), generator=g)
    c1, c2 = torch.randn(2, 1, 4, 6, 6, generator=g)
    with torch.no_grad():
        m, a = next(p.group_logits(idx, c1))
        b = next(p.group_logits(idx, c2))[1]
    assert not torch.equal(a[..., m], b[..., m])


@pytest.mark.parametrize("dims,cond_ch,batch", [(2, 4, 1), (2, 0, 3), (1, 4, 2)])
def test_logits_before_any_code_skip_the_zero_context_exactly(dims, cond_ch, batch):
    """With nothing known, logits skip the context channels (all zeros): the same
    function as the whole network on them, up to float rounding, for any batch."""
    p = _prior(dims, cond_ch).double()
    g = torch.Generator().manual_seed(3)
    grid = (5, 6) if dims == 2 else (7,)
    idx = torch.randint(0, p.num_codes, (batch, *grid), generator=g)
    cond = torch.randn(batch, cond_ch, *grid, generator=g, dtype=torch.float64) if cond_ch else None
    none = torch.zeros(grid, dtype=torch.bool)
    with torch.no_grad():
        fast = p.logits(idx, none, cond)
        zeros = torch.zeros(batch, p._context_channels, *grid, dtype=torch.float64)
        full = p.net(torch.cat([zeros] + ([cond] if cond_ch else []), 1))
    assert fast.shape == (batch, p.num_codes, *grid)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k,cond_ch,dims", [(32, 8, 2), (256, 0, 2), (16, 4, 1)])
def test_forward_bits_near_log2k_and_differentiable(k, cond_ch, dims):
    torch.manual_seed(3)
    p = ContextPrior(k, cond_ch, dims, hidden=32, blocks=1).train()
    shape = (2, 12, 10) if dims == 2 else (2, 40)
    idx = torch.randint(0, k, shape)
    cond = torch.randn(2, cond_ch, *shape[1:]) if cond_ch else None
    bits = p(idx, cond)
    assert bits.shape == () and torch.isfinite(bits)
    assert abs(bits.item() - math.log2(k)) < 0.25
    bits.backward()
    for name, prm in p.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
    assert p.embed.weight.grad.abs().sum() > 0
    assert p.net[-1].weight.grad.abs().sum() > 0



@pytest.mark.parametrize("dims,cond_ch,grid,phase,blocks", [
    (2, 4, (8, 10), 2, 2), (2, 0, (7, 9), 2, 2), (1, 3, (23,), 2, 2), (2, 0, (7, 8), 3, 1),
    (2, 4, (1, 1), 1, 2), (2, 4, (3, 5), 2, 0), (1, 0, (9,), 3, 0), (2, 4, (1, 3), 2, 2),
])
def test_logits_at_equals_the_full_grid_logits_on_each_group(dims, cond_ch, grid, phase, blocks):
    """The codec's sub-grid evaluation (shared conditioning term, strided last block)
    is the same function as the training-time logits, group by group."""
    torch.manual_seed(4)
    p = ContextPrior(16, cond_ch, dims, embed=8, hidden=24, blocks=blocks, phase=phase).double().eval()
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 16, (1, *grid), generator=g)
    cond = torch.randn(1, cond_ch, *grid, generator=g, dtype=torch.float64) if cond_ch else None
    base = p.cond_term(cond, grid)
    known = torch.zeros(grid, dtype=torch.bool)
    with torch.no_grad():
        for (mask, full), offset in zip(p.group_logits(idx, cond), p.offsets()):
            if not mask.any():
                continue
            sub = p.logits_at(idx, known, base, offset)
            assert sub.shape[2:] == tuple(-(-(n - o) // phase) for n, o in zip(grid, offset))
            want = full[0][:, mask].t()
            torch.testing.assert_close(sub[0].flatten(1).t(), want, rtol=0, atol=1e-12)
            known = known | mask
