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


def mse(a, b) -> float:
    return float(((a - b) ** 2).mean())


M = torch.tensor([[1.3, -0.2, 0.1], [0.05, 0.8, 0.2], [-0.1, 0.3, 1.1]], dtype=torch.float64)
B = torch.tensor([0.04, -0.03, 0.02], dtype=torch.float64)


def affine(y, m, b):
    return torch.einsum("ij,bjhw->bihw", m, y) + b.view(1, -1, 1, 1)


def test_fit_recovers_an_affine_map():
    y = smooth((256, 256, 3)).double()
    x = affine(y, M, B)
    blob = colour.fit(y, x, 256 * 256)
    assert blob is not None
    m, b = colour.parse(blob, 3)
    assert torch.allclose(m, M, atol=2 ** -blob[0]) and torch.allclose(b, B, atol=2 ** -(blob[0] + 2))
    assert mse(colour.apply(y, blob), x) < 1e-3 * mse(y, x)


def test_fit_corrects_a_noisy_decode_and_never_hurts():
    y = smooth((128, 192, 3), seed=1).double()
    x = (affine(y, M, B) + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(2),
                                              dtype=torch.float64)).clamp(0, 1)
    blob = colour.fit(y, x, 128 * 192)
    assert mse(colour.apply(y, blob).clamp(0, 1), x) < 0.5 * mse(y, x)


def test_nothing_to_correct_sends_nothing():
    y = smooth((64, 64, 3), seed=3)
    assert colour.fit(y, y.clone(), 64 * 64) is None


def test_a_correction_that_does_not_pay_for_its_bytes_is_left_out():
    y = smooth((28, 28, 1), seed=4)
    x = y * 1.01 + 0.002                       # 0.1 dB for ~4 bytes on 784 pixels
    assert colour.fit(y, x, 28 * 28) is None
    assert colour.fit(y, y * 0.9 + 0.15, 28 * 28) is not None    # a large fix: worth its bytes


def test_gray_models_send_a_gain_and_an_offset():
    y = smooth((96, 96, 1), seed=5).double()
    blob = colour.fit(y, y * 1.25 - 0.05, 96 * 96)
    m, b = colour.parse(blob, 1)
    assert m.shape == (1, 1) and b.shape == (1,)
    assert abs(float(m) - 1.25) < 2 ** -blob[0] and abs(float(b) + 0.05) < 2 ** -(blob[0] + 2)


def test_flat_images_do_not_break_the_fit():
    y = torch.full((1, 3, 32, 32), 0.5)
    x = torch.full((1, 3, 32, 32), 0.7)
    blob = colour.fit(y, x, 32 * 32)                # a singular system: least norm, no error
    assert blob is None or mse(colour.apply(y, blob), x) < mse(y, x)


@pytest.mark.parametrize("blob, message", [
    (b"", "bad colour correction"),
    (bytes([colour.MAX_PRECISION + 1]) + bytes(12), "bad colour correction"),
    (bytes([6]) + bytes(11), "bad colour correction"),            # one varint short
    (bytes([6]) + bytes(13), "bad colour correction"),            # one byte over
    (bytes([6]) + b"\x80\x80\x80\x01" + bytes(11), "colour correction out of range"),
])
def test_malformed_corrections_are_refused(blob, message):
    with pytest.raises(FormatError, match=f"^corrupt file: {message}$"):
        colour.parse(blob, 3)
