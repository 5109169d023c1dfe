"""Tests for hvqc.colour: the per-file colour correction."""
import pytest
import torch

from hvqc import colour
from hvqc.bitstream import FormatError


def smooth(shape, seed=0) -> torch.Tensor:
    """A smooth random signal in [0.1, 0.9] with correlated channels, like a decoded photo."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 1, shape[0] // 8, shape[1] // 8, generator=g)
    chroma = torch.rand(1, shape[2], shape[0] // 8, shape[1] // 8, generator=g)
    x = 0.7 * base + 0.3 * chroma
    return torch.nn.functional.interpolate(x, size=shape[:2], mode="bilinear").clamp(0, 1) * 0.8 + 0.1


SLOPE = 0.1      # the photo model's log-slope (its manifest's "colour_log_slope")


def mse(a, b) -> float:
    return float(((a - b) ** 2).mean())


M = torch.tensor([[1.3, -0.2, 0.1], [0.05, 0.8, 0.2], [-0.1, 0.3, 1.1]], dtype=torch.float64)
B = torch.tensor([0.04, -0.03, 0.02], dtype=torch.float64)


def affine(y, m, b):
    return torch.einsum("ij,bjhw->bihw", m, y) + b.view(1, -1, 1, 1)


def dense_design(f: torch.Tensor, height: int, width: int, g: int, step: int = 1) -> torch.Tensor:
    """The fit's design written out densely: one row per pixel of features ``f``
    ``[F, h, w]`` (every ``step``-th row and column of a ``height x width`` image), each
    node's bilinear weight times each feature, ``[h * w, g * g * F]``."""
    vh, vw = colour._hat(height, g, torch.float64)[::step], colour._hat(width, g, torch.float64)[::step]
    nodes = (vh[:, None, :, None] * vw[None, :, None, :]).flatten(2)                 # [h, w, g * g]
    return (nodes[..., :, None] * f.movedim(0, -1)[..., None, :]).reshape(-1, g * g * f.shape[0])


def bits_of(y) -> float:
    """A file of 0.1 bpp: what the rate test weighs a map's bytes against."""
    return 0.1 * y.shape[-1] * y.shape[-2]


def test_fit_recovers_an_affine_map():
    y = smooth((256, 256, 3)).double()
    x = affine(y, M, B)
    blob = colour.fit(y, x, bits_of(y), SLOPE)
    kind, g, w = colour.parse(blob, 3)
    assert (colour.KINDS[kind], g) == ("affine", 1)             # the cheapest map that fits
    assert torch.allclose(w[:3].T, M, atol=2 ** -blob[0]) and torch.allclose(w[3], B, atol=2 ** -blob[0])
    assert mse(colour.apply(y, blob), x) < 1e-3 * mse(y, x)


def test_a_tone_curve_takes_the_quadratic_map():
    y = smooth((256, 256, 3), seed=6).double()
    x = 0.1 + 0.9 * y ** 2
    blob = colour.fit(y, x, bits_of(y), SLOPE)
    kind, g, _ = colour.parse(blob, 3)
    assert colour.KINDS[kind] == "quadratic"
    assert mse(colour.apply(y, blob), x) < 1e-3 * mse(y, x)


def test_a_local_cast_takes_a_grid():
    y = smooth((240, 320, 3), seed=7).double()
    ramp = torch.linspace(0, 1, 320, dtype=torch.float64)        # darker to the left, redder to the right
    x = y * (0.7 + 0.3 * ramp)
    x[:, 0] += 0.1 * ramp
    blob = colour.fit(y, x, bits_of(y), SLOPE)
    kind, g, _ = colour.parse(blob, 3)
    assert g >= 2
    assert mse(colour.apply(y, blob), x) < 0.05 * mse(y, x)


def test_fit_corrects_a_noisy_decode():
    y = smooth((128, 192, 3), seed=1).double()
    x = (affine(y, M, B) + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(2),
                                              dtype=torch.float64)).clamp(0, 1)
    blob = colour.fit(y, x, bits_of(y), SLOPE)
    assert mse(colour.apply(y, blob).clamp(0, 1), x) < 0.5 * mse(y, x)


def test_large_images_are_fitted_on_a_sample_of_their_pixels():
    y = smooth((640, 960, 3), seed=8).double()                   # 614,400 pixels: every 3rd
    x = affine(y, M, B)
    blob = colour.fit(y, x, bits_of(y), SLOPE)
    assert mse(colour.apply(y, blob), x) < 1e-3 * mse(y, x)


def test_nothing_to_correct_sends_nothing():
    y = smooth((64, 64, 3), seed=3)
    assert colour.fit(y, y.clone(), bits_of(y), SLOPE) is None


def test_a_correction_that_does_not_pay_for_its_bytes_is_left_out():
    y = smooth((28, 28, 1), seed=4)
    assert colour.fit(y, y * 1.01 + 0.002, 28 * 28 * 0.5, SLOPE) is None     # 0.1 dB for a tenth of the file
    assert colour.fit(y, y * 0.9 + 0.15, 28 * 28 * 0.5, SLOPE) is not None   # a large fix: worth its bytes
    # The same fix pays in a large file, where its bytes are a smaller share.
    assert colour.fit(y, y * 1.01 + 0.002, 28 * 28 * 100, SLOPE) is not None
    # ... and in a model whose curve is flatter (each byte of codes buys less).
    assert colour.fit(y, y * 1.01 + 0.002, 28 * 28 * 0.5, SLOPE / 100) is not None


def test_gray_models_send_a_gain_and_an_offset():
    y = smooth((96, 96, 1), seed=5).double()
    blob = colour.fit(y, y * 1.25 - 0.05, bits_of(y), SLOPE)
    kind, g, w = colour.parse(blob, 1)
    assert (kind, g, tuple(w.shape)) == (0, 1, (2, 1))
    assert abs(float(w[0]) - 1.25) < 2 ** -blob[0] and abs(float(w[1]) + 0.05) < 2 ** -blob[0]


def test_flat_images_do_not_break_the_fit():
    y = torch.full((1, 3, 32, 32), 0.5)
    x = torch.full((1, 3, 32, 32), 0.7)
    blob = colour.fit(y, x, bits_of(y), SLOPE)                # a singular system: the least-norm map
    assert mse(colour.apply(y, blob), x) < 0.01 * mse(y, x)


@pytest.mark.parametrize("blob, message", [
    (b"", "bad colour correction"),
    (bytes([6]), "bad colour correction"),
    (bytes([colour.MAX_PRECISION + 1, 0x01]) + bytes(12), "bad colour correction"),
    (bytes([6, 0x21]) + bytes(12), "bad colour correction"),                # no third kind
    (bytes([6, 0x00]) + bytes(12), "bad colour correction"),                # a grid of 0 nodes
    (bytes([6, colour.MAX_GRID + 1]) + bytes(12), "bad colour correction"),
    (bytes([6, 0x01]) + bytes(11), "bad colour correction"),                # one weight short
    (bytes([6, 0x01]) + bytes(13), "bad colour correction"),                # one byte over
    (bytes([6, 0x02]) + bytes(12), "bad colour correction"),                # 2 x 2 nodes need 48
    (bytes([6, 0x01]) + b"\x80\x80\x80\x01" + bytes(11), "colour correction out of range"),
])
def test_malformed_corrections_are_refused(blob, message):
    with pytest.raises(FormatError, match=f"^corrupt file: {message}$"):
        colour.parse(blob, 3)


def test_every_kind_and_grid_round_trips_through_the_blob():
    y = smooth((48, 64, 3), seed=9).double()
    for kind in range(len(colour.KINDS)):
        for g in (1, 2, 5):
            f = colour.num_features(kind, 3)
            ints = list(range(-(g * g * f * 3) // 2, (g * g * f * 3 + 1) // 2))
            blob = colour._encode(7, kind, g, ints)
            k2, g2, w = colour.parse(blob, 3)
            assert (k2, g2) == (kind, g)
            want = colour._identity(kind, 3, g) + torch.tensor(ints, dtype=torch.float64).view(-1, 3) / 2**7
            assert torch.equal(w, want)
            assert colour.apply(y, blob).shape == y.shape


@pytest.mark.parametrize("height, width, step", [(37, 53, 1), (130, 70, 2), (1, 9, 1), (5, 1, 1)])
def test_normal_equations_match_the_dense_design(height, width, step):
    """The fit sums each pixel's products over neighbouring node pairs only; the result
    must be the dense design's ``D^T D`` and ``D^T X`` (one row per pixel, every node)."""
    g_ = torch.Generator().manual_seed(height * width)
    y = torch.rand(3, height, width, generator=g_, dtype=torch.float64)
    x = torch.rand(3, height, width, generator=g_, dtype=torch.float64)
    ys, xs = y[:, ::step, ::step], x[:, ::step, ::step]
    f = colour.features(ys, 1)
    got = colour._normal_equations(f, xs, height, width, step)
    assert sorted(got) == list(colour.GRIDS)
    for g in colour.GRIDS:
        d = dense_design(f, height, width, g, step)
        dtd, dtx = got[g]
        assert torch.allclose(dtd, d.T @ d, rtol=1e-12, atol=1e-12)
        assert torch.allclose(dtx, d.T @ xs.movedim(0, -1).reshape(-1, 3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("height, width", [(37, 53), (1, 9), (5, 1), (130, 70)])
def test_the_map_applied_is_the_fitted_design(height, width, monkeypatch):
    """:func:`colour.apply` (separable, in blocks of rows) must compute what the fit
    models: the dense design ``D`` (one row per pixel, every node's weight times every
    feature) times the weights, for every kind and grid, across block boundaries."""
    monkeypatch.setattr(colour, "_ROWS", 256)          # several blocks of rows
    g_ = torch.Generator().manual_seed(height + width)
    y = torch.rand(3, height, width, generator=g_, dtype=torch.float64)
    for kind in range(len(colour.KINDS)):
        f = colour.features(y, kind)
        for g in (1, 2, 3, 5):
            w = torch.randn(g * g * f.shape[0], 3, generator=g_, dtype=torch.float64)
            want = (dense_design(f, height, width, g) @ w).T.reshape(3, height, width)
            assert torch.allclose(colour._map(y, kind, g, w), want, rtol=1e-12, atol=1e-12)
