"""Tests for hvqc.quantize.GumbelQuantizer."""
import pytest
import torch
import torch.nn.functional as F

from hvqc.quantize import GumbelQuantizer

K, D = 32, 8


def make(seed: int = 0, k: int = K, d: int = D) -> GumbelQuantizer:
    torch.manual_seed(seed)
    return GumbelQuantizer(k, d)


def latents(seed: int, shape=(3, D, 10, 12), dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


def test_eval_forward_equals_encode_then_decode():
    q = make().eval()
    z = latents(1)
    out = q(z)
    idx = q.encode(z)
    assert idx.shape == (3, 10, 12) and idx.dtype == torch.int64
    assert torch.equal(out.indices, idx)
    assert torch.equal(q.decode(idx), out.quantized)
    assert out.quantized.shape == z.shape
    assert out.loss.item() == 0.0


def test_eval_forward_is_deterministic_and_1d_works():
    q = make().eval()
    z = latents(2, shape=(2, D, 17))
    a, b = q(z), q(z)
    assert torch.equal(a.quantized, b.quantized) and torch.equal(a.indices, b.indices)
    assert torch.equal(q.decode(q.encode(z)), a.quantized)


def test_encode_picks_nearest_normalised_codeword():
    q = make(3)
    z = latents(4, dtype=torch.float64)
    idx = q.encode(z)
    rows = z.movedim(1, -1).reshape(-1, D)
    rows = rows / rows.norm(dim=1, keepdim=True)
    cb = q.codebook.detach().double()
    cb = cb / cb.norm(dim=1, keepdim=True)
    brute = ((rows[:, None, :] - cb[None, :, :]) ** 2).sum(-1)      # [N, K]
    want = brute.argmin(1).view(idx.shape)
    assert torch.equal(idx, want)
    # Scaling an encoder output does not change its code (comparison on the sphere).
    assert torch.equal(q.encode(z * 7.5), idx)


def test_decode_returns_unit_codewords():
    q = make(5)
    idx = torch.arange(K).view(1, 4, 8)
    v = q.decode(idx)
    assert v.shape == (1, D, 4, 8)
    assert torch.allclose(v.norm(dim=1), torch.ones(1, 4, 8), atol=1e-6)
    assert torch.allclose(v[0, :, 0, 1], F.normalize(q.codebook[1].detach(), dim=0))


def test_training_forward_is_differentiable():
    q = make(6).train()
    z = latents(7).requires_grad_(True)
    torch.manual_seed(0)
    out = q(z, tau=1.0)
    assert out.quantized.shape == z.shape
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    target = latents(8)
    obj = (out.quantized * target).sum() + out.loss
    obj.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    g = q.codebook.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # The quantization loss alone also reaches both sides.
    q.zero_grad()
    z2 = latents(7).requires_grad_(True)
    q(z2).loss.backward()
    assert z2.grad.abs().sum() > 0 and q.codebook.grad.abs().sum() > 0


def test_training_forward_counts_usage():
    q = make(9).train()
    z = latents(10)
    out = q(z)
    assert q.usage.sum().item() == out.indices.numel()
    assert torch.equal(q.usage, torch.bincount(out.indices.flatten(), minlength=K).float())


def test_init_from_uses_the_codebook():
    q = make(11)
    # 1024 encoder outputs in a narrow cone: a random codebook leaves many codes idle.
    z = 0.2 * latents(12, shape=(4, D, 16, 16))
    z[:, 0] += 1.0
    assert q.encode(z).unique().numel() < 0.75 * K
    q.init_from(z)
    assert bool(q.initialised)
    assert q.usage.sum().item() == 0
    used = q.encode(z).unique().numel()
    assert used >= 0.9 * K, f"only {used}/{K} codes used after k-means init"


def test_init_from_small_batch():
    q = make(13)
    z = latents(14, shape=(1, D, 3, 4))            # 12 rows < 32 codes
    q.init_from(z)
    assert torch.isfinite(q.codebook).all()
    assert torch.isfinite(q.sharpness) and q.sharpness.item() > 0


def test_reset_dead_moves_unused_codes():
    q = make(15).train()
    half = K // 2
    cw = q.codewords().detach()
    g = torch.Generator().manual_seed(16)
    # Encoder outputs right on the first half of the codewords: the rest are never hit.
    pick = torch.arange(half).repeat(20)
    rows = cw[pick] + 1e-3 * torch.randn(len(pick), D, generator=g)
    z = rows.t().reshape(1, D, 20, half)
    q(z)
    assert (q.usage[:half] > 0).all() and (q.usage[half:] == 0).all()
    before = q.codebook.detach().clone()
    n = q.reset_dead(z)
    assert n == half
    assert q.usage.sum().item() == 0
    after = q.codebook.detach()
    assert torch.equal(after[:half], before[:half])              # live codes untouched
    assert not torch.isclose(after[half:], before[half:]).all(1).any()   # every dead one moved
    # The moved codes now sit on encoder outputs.
    d = q.distances(F.normalize(rows, dim=1))[:, half:].min(0).values
    assert (d < 1e-2).all()


def test_reset_dead_without_usage_is_a_no_op():
    q = make(17)
    before = q.codebook.detach().clone()
    assert q.reset_dead(latents(18)) == 0
    assert torch.equal(q.codebook.detach(), before)


@pytest.mark.parametrize("nats", [8.0, 3.0])
def test_calibrate_sets_mean_logit_gap(nats):
    q = make(19)
    z = latents(20)
    if nats == 8.0:
        q.calibrate(z)                  # the default target
    else:
        q.calibrate(z, nats=nats)
    rows = F.normalize(z.movedim(1, -1).reshape(-1, D), dim=1)
    logits = -q.sharpness * q.distances(rows)
    gap = (logits.max(1).values - logits.mean(1)).mean().item()
    assert gap == pytest.approx(nats, rel=1e-4)


def test_calibrate_momentum_is_an_ema():
    q = make(21)
    z = latents(22)
    q.calibrate(z)
    target = q.sharpness.item()
    q.sharpness.fill_(2.0)
    q.calibrate(z, momentum=0.75)
    assert q.sharpness.item() == pytest.approx(0.75 * 2.0 + 0.25 * target, rel=1e-5)
