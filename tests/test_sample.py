"""Sampling from the priors: seeded, shaped right, and each mode decodes as documented."""
import numpy as np
import pytest
import torch
from PIL import Image

from hvqc.sample import draw_level, sample, sample_codes


def test_same_seed_same_codes_and_different_seed_differs(tiny):
    m = tiny.model
    a = sample_codes(m, (32, 48), 3, seed=5)
    b = sample_codes(m, (32, 48), 3, seed=5)
    c = sample_codes(m, (32, 48), 3, seed=6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[0], c[0])
    assert [a[l].shape for l in sorted(a)] == [(3, 8, 12), (3, 4, 6), (3, 2, 3)]


def test_decode_mode_is_the_deterministic_descent_from_the_top(tiny):
    m = tiny.model
    gen = torch.Generator().manual_seed(3)
    codes = sample_codes(m, (32, 32), 2, seed=3, lower="decode")
    top = draw_level(m, 2, (2, 2), 2, None, 1.0, gen)
    want = m.descend(2, top)
    assert torch.equal(codes[0], want[0])


def test_low_temperature_concentrates_on_the_prior_mode(tiny):
    m = tiny.model
    gen = torch.Generator().manual_seed(0)
    cold = draw_level(m, 2, (4, 4), 64, None, 1e-3, gen)
    # the first coding group has no context: every sample takes the same (argmax) code there
    first = m.levels[2].prior.masks((4, 4))[0]
    assert (cold[:, first] == cold[0, first]).all()


def test_sample_shape_and_range(tiny):
    x = sample(tiny.model, (32, 32), 2, seed=1)
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()
    with pytest.raises(ValueError):
        sample_codes(tiny.model, (32, 32), 1, temperature=0)


def test_cli_sample_grid_folder_and_force(cli, tmp_path):
    rc, _, err = cli("sample", "-m", "tiny", "-n", "4", "--size", "40x24", "--seed", "2",
                     "-o", tmp_path / "g.png")
    assert (rc, err) == (0, ""), err
    g = Image.open(tmp_path / "g.png")
    assert g.size == (2 + 2 * (40 + 2), 2 + 2 * (24 + 2))          # 2x2 grid, 2-px padding
    rc, _, err = cli("sample", "-m", "tiny", "-n", "4", "--size", "40x24", "--seed", "2",
                     "-o", tmp_path / "g.png")
    assert rc != 0 and "--force" in err and "Traceback" not in err
    rc, _, err = cli("sample", "-m", "tiny", "-n", "4", "--size", "40x24", "--seed", "2",
                     "-o", tmp_path / "g2.png")
    assert np.array_equal(np.asarray(g), np.asarray(Image.open(tmp_path / "g2.png")))
    rc, _, err = cli("sample", "-m", "tiny", "-n", "3", "--size", "16x16", "--lower", "decode",
                     "-o", tmp_path / "many")
    assert (rc, err) == (0, ""), err
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == [
        "sample_0000.png", "sample_0001.png", "sample_0002.png"]
    rc, _, err = cli("sample", "-m", "tiny", "--level", "9", "-o", tmp_path / "x.png")
    assert rc != 0 and err.startswith("hvqc: error:") and not (tmp_path / "x.png").exists()
