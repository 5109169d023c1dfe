"""Joint-stream files (all levels in one coder stream) and gray (1-channel) models.

``tiny-gray`` mirrors the ``mnist`` model: gray, levels halving down to a 1x1 top
for 8x8 inputs, joint stream by default.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hvqc import bitstream, codec, zoo
from hvqc.api import compress, decompress, describe, truncate


@pytest.fixture(scope="module")
def gray():
    zoo.load.cache_clear()
    return zoo.load("tiny-gray")


@pytest.fixture
def digit() -> Image.Image:
    rng = np.random.default_rng(3)
    arr = (rng.random((8, 8)) * 255).astype(np.uint8)
    return Image.fromarray(arr, mode="L")


def _header(**kw) -> bitstream.Header:
    base = dict(model="m", weights_hash=b"\0\1\2\3", width=8, height=8, mode="L", num_levels=3,
                levels=(3, 2, 1))
    base.update(kw)
    return bitstream.Header(**base)


def test_container_joint_round_trip():
    c = bitstream.Container(_header(joint=True), (b"\x01\x02\x03\x04",))
    data = bitstream.write(c)
    back = bitstream.read(data)
    assert back.header.joint and back.segments == (b"\x01\x02\x03\x04",)
    assert data[5] & 0x04                              # the flags byte carries the joint bit
    split = bitstream.write(bitstream.Container(_header(), (b"\1\2\3\4",) * 3))
    assert not bitstream.read(split).header.joint and not split[5] & 0x04


def test_container_joint_needs_one_segment():
    with pytest.raises(ValueError, match="need 1 byte segments"):
        bitstream.write(bitstream.Container(_header(joint=True), (b"a", b"b", b"c")))
    with pytest.raises(ValueError, match="need 3 byte segments"):
        bitstream.write(bitstream.Container(_header(), (b"abcd",)))


def test_container_joint_cannot_be_cut_without_model():
    data = bitstream.write(bitstream.Container(_header(joint=True), (b"\1\2\3\4",)))
    with pytest.raises(bitstream.FormatError, match="joint-stream"):
        bitstream.truncate(data, 2)


def test_gray_model_round_trip(gray, digit):
    for level in (1, 2, 3):
        data = compress(digit, model=gray, level=level)
        h = bitstream.read(data).header
        assert h.joint and h.mode == "L" and h.levels == tuple(range(3, level - 1, -1))
        img = decompress(data, model=gray)
        assert img.mode == "L" and img.size == (8, 8)
        assert decompress(data, model=gray).tobytes() == img.tobytes()


def test_joint_decodes_like_split(gray, digit):
    joint = compress(digit, model=gray, joint=True)
    split = compress(digit, model=gray, joint=False)
    assert decompress(joint, model=gray).tobytes() == decompress(split, model=gray).tobytes()
    dj, ds = describe(joint), describe(split)
    assert dj["stream"] == "joint" and ds["stream"] == "split"
    assert all(lv["payload_bytes"] is None for lv in dj["levels"])
    # one seal instead of three (each a few bits since streams drop their final word's
    # free bytes) and no per-level lengths in the header: the file is never larger
    assert len(joint) <= len(split)


def test_joint_payload_close_to_ideal(gray, digit):
    res = codec.compress_image(gray, digit, 1, joint=True)
    ideal = sum(res.estimated_bits)
    assert len(res.payload_bytes) == 1
    assert ideal <= 8 * res.payload_bytes[0] <= ideal + 64      # at most two 32-bit words of flush


def test_joint_coarser_level_from_finer_file(gray, digit, plain):
    fine = compress(digit, model=gray, level=1)
    for level in (2, 3):
        direct = plain(compress(digit, model=gray, level=level))     # less its own correction
        assert decompress(fine, model=gray, level=level).tobytes() == \
            decompress(direct, model=gray).tobytes()


def test_joint_recode_equals_direct_encoding(gray, digit, plain):
    fine = compress(digit, model=gray, level=1)
    assert codec.recode(fine, 1, gray) == fine
    for level in (2, 3):      # the same bytes, less the colour correction of the level's own file
        assert codec.recode(fine, level, gray) == plain(compress(digit, model=gray, level=level))
    with pytest.raises(bitstream.FormatError, match="cannot truncate to level"):
        codec.recode(compress(digit, model=gray, level=2), 1, gray)


def test_api_truncate_uses_the_model_for_joint_files(gray, digit, plain):
    fine = compress(digit, model=gray, level=1)
    assert truncate(fine, 3) == plain(compress(digit, model=gray, level=3))


def test_bpp_target_picks_level_on_joint_file(gray, digit, plain):
    level2 = plain(compress(digit, model=gray, level=2))      # without its colour correction
    target = 8 * len(level2) / 64 + 1e-9
    data = compress(digit, model=gray, bpp=target)
    assert bitstream.read(data).header.levels == (3, 2)
    assert data == level2              # its correction would not fit


def test_corrupt_joint_stream_is_a_format_error(gray, digit):
    data = compress(digit, model=gray, level=1)
    c = bitstream.read(data)
    seg = c.segments[0]
    for bad in (seg + b"\0\0\0\0", seg[:-4] if len(seg) > 4 else b""):
        forged = bitstream.write(bitstream.Container(c.header, (bad,), c.extras))
        try:
            decompress(forged, model=gray)
        except bitstream.FormatError as e:
            assert "corrupt payload" in str(e)
        # (a stream that happens to decode to other codes is not detectable: no exception is fine)


def test_rgb_image_on_gray_model(gray):
    rgb = Image.fromarray(np.full((8, 8, 3), (200, 100, 50), np.uint8), mode="RGB")
    img = decompress(compress(rgb, model=gray), model=gray)
    assert img.mode == "RGB" and img.size == (8, 8)
    arr = np.asarray(img)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_gray_sampling_uniform_top(gray):
    from hvqc.sample import sample_codes
    a = sample_codes(gray.model, (8, 8), 4, seed=1, top="uniform", lower="decode")
    b = sample_codes(gray.model, (8, 8), 4, seed=1, top="uniform", lower="decode")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a[2].shape == (4, 1, 1)
    with pytest.raises(ValueError, match="top must be"):
        sample_codes(gray.model, (8, 8), 1, top="flat")


def test_cli_joint_file(cli, tmp_path, digit):
    src = tmp_path / "d.png"
    digit.save(src)
    rc, _, err = cli("encode", src, "-o", tmp_path / "d.hvqc", "--model", "tiny-gray")
    assert rc == 0, err
    rc, out, err = cli("info", tmp_path / "d.hvqc")
    assert rc == 0 and "joint stream" in out, err
    rc, _, err = cli("truncate", tmp_path / "d.hvqc", "--level", "2")
    assert rc == 0, err
    assert bitstream.read((tmp_path / "d.l2.hvqc").read_bytes()).header.levels == (3, 2)
    rc, _, err = cli("encode", src, "-o", tmp_path / "s.hvqc", "--model", "tiny-gray", "--split")
    assert rc == 0 and not bitstream.read((tmp_path / "s.hvqc").read_bytes()).header.joint, err
    rc, _, err = cli("decode", tmp_path / "d.l2.hvqc", "-o", tmp_path / "d.png", "--force")
    assert rc == 0 and Image.open(tmp_path / "d.png").mode == "L", err
    rc, _, err = cli("sample", "-o", tmp_path / "g.png", "--model", "tiny-gray", "-n", "4",
                     "--top", "uniform")
    assert rc == 0 and Image.open(tmp_path / "g.png").size[0] > 8, err
    rc, _, err = cli("sample", "-o", tmp_path / "g2.png", "--model", "tiny-gray", "--top", "flat")
    assert rc == 1 and err.count("\n") == 1 and "--top" in err


def test_joint_refinement_cuts_with_the_model(gray, digit, plain):
    """A joint file's refinement: its cuts are re-coded (same bytes as coding them), and a
    1x1 top level (one group) has no refinement."""
    part = codec.compress_image(gray, digit, 1, groups=2).data
    assert bitstream.read(part).header.groups == 2
    assert codec.recode(part, 1, gray) == part
    assert codec.recode(part, 2, gray) == plain(compress(digit, model=gray, level=2))
    assert decompress(part, model=gray).size == digit.size
    full = compress(digit, model=gray, level=1)
    cuts = [(lv, g) for _, lv, g in codec.file_cuts(full, gray)]
    assert cuts == [(1, 0), (1, 3), (1, 2), (1, 1), (2, 0), (2, 3), (2, 2), (2, 1), (3, 0)]
    with pytest.raises(ValueError, match="already a refinement"):
        codec.file_cuts(part, gray)
