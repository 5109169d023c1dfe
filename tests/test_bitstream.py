"""Tests for the .hvqc container (hvqc.bitstream)."""

import random
import struct
import zlib
from dataclasses import replace

import pytest

from hvqc.bitstream import (COLOUR_TAG, MAGIC, MAX_SIDE, VERSION, Container, FormatError, Header,
                            pack_varints, read_varints,
                            peek_header, read, truncate, write)

HASH = bytes.fromhex("deadbeef")


def leb128(n: int) -> bytes:
    """Independent varint encoder, so crafted files don't depend on the module under test."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def craft(*, version=VERSION, flags=0, model=b"photo", size=(768, 512), mode=2,
          packed=(3 << 4) | 1, tail=b"", segments=(b"abc",), raw_size=None) -> bytes:
    """Hand-build a file with a valid CRC; each keyword can be made invalid on purpose."""
    body = MAGIC + bytes([version, flags, len(model)]) + model + HASH
    body += raw_size if raw_size is not None else leb128(size[0]) + leb128(size[1])
    body += bytes([mode, packed]) + tail + b"\x00"  # tail: e.g. sample rate; then no extras
    body += b"".join(leb128(len(s)) for s in segments) + b"".join(segments)
    return with_crc(body)


def make(levels=(3, 2, 1), num_levels=3, size=(768, 512), mode="RGB", extras=None,
         modality=0, sample_rate=0, model="photo", seg_sizes=None, groups=0) -> Container:
    rng = random.Random(len(levels) * 1000 + size[0])
    seg_sizes = seg_sizes or [17 * (i + 1) for i in range(len(levels))]
    segs = tuple(bytes(rng.randrange(256) for _ in range(n)) for n in seg_sizes)
    h = Header(model, HASH, size[0], size[1], mode, num_levels, tuple(levels), modality, sample_rate,
               groups=groups)
    return Container(h, segs, dict(extras or {}))


CASES = {
    "one_level": make(levels=(1,), num_levels=1, mode="L"),
    "three_levels": make(),
    "partial_levels": make(levels=(3, 2), mode="RGBA"),
    "extras": make(extras={1: b"alpha" * 40, 0: b"", 255: b"\x00\xff"}, mode="LA"),
    "speech": make(levels=(2,), num_levels=2, modality=1, sample_rate=16000, mode="I;16"),
    "tiny": make(size=(1, 1)),
    "wide": make(size=(MAX_SIDE, 1)),
    "big_segments": make(seg_sizes=[300, 2500, 70000]),
    "refinement": make(levels=(3, 2), groups=2),
    "speech_refinement": make(levels=(2,), num_levels=2, modality=1, sample_rate=8000, groups=255),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip(name):
    c = CASES[name]
    data = write(c)
    back = read(data)
    assert back == c
    assert list(back.extras) == sorted(c.extras)
    assert write(back) == data


def test_golden_bytes():
    # A change here changes the on-disk format: it must bump VERSION.
    h = Header("photo", HASH, 768, 512, "RGB", 3, (3, 2))
    c = Container(h, (b"top", b"mid-level"), {7: b"xy", 1: b"A"})
    assert write(c).hex() == (
        "4856514303000570686f746fdeadbeef80068004023202010107020309417879746f706d69642d6c6576656c"
        "2ae14d37")


def test_header_is_compact():
    c = make(seg_sizes=[300, 2500, 18000])
    overhead = len(write(c)) - sum(map(len, c.segments)) - 4  # minus payload and CRC trailer
    assert overhead <= 32


def test_peek_header():
    c = CASES["extras"]
    data = write(c)
    header, lengths, total = peek_header(data)
    assert header == c.header
    assert lengths == [len(s) for s in c.segments]
    assert total == len(data)
    with pytest.raises(FormatError, match="CRC32"):
        peek_header(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])


@pytest.mark.parametrize("lowest", [3, 2, 1])
def test_truncate(lowest):
    c = make(extras={1: b"alpha"})
    small = truncate(write(c), lowest)
    back = read(small)
    keep = 3 - lowest + 1
    assert back.header.levels == (3, 2, 1)[:keep]
    assert back.segments == c.segments[:keep]
    assert back.extras == c.extras
    assert len(small) < len(write(c)) or lowest == 1


def test_refinement_layout_and_truncation():
    """A refinement sets flag 0x08 and stores its group count after the levels byte; a
    complete file is byte-for-byte what it was before refinements existed."""
    full, part = write(make()), write(make(groups=3))
    assert full[5] == 0x00 and part[5] == 0x08
    at = 4 + 3 + len(b"photo") + 4 + len(leb128(768) + leb128(512)) + 2
    assert part[at] == 3 and part[:5] + part[6:at] == full[:5] + full[6:at]
    assert part[at + 1:-4] == full[at:-4]              # the rest is the same (same segments)
    assert read(part).header.groups == 3
    # Cutting above the refinement drops it; keeping the finest level keeps it.
    assert read(truncate(part, 2)).header.groups == 0
    assert read(truncate(part, 1)).header.groups == 3
    for bad in (-1, 256, True):
        with pytest.raises(ValueError, match="groups"):
            write(make(groups=bad))


def test_truncate_missing_level():
    data = write(make(levels=(3, 2)))
    for bad in (1, 0, 4):
        with pytest.raises(FormatError, match="cannot truncate"):
            truncate(data, bad)


def test_bad_magic():
    for data in (b"", b"HVQ", b"PNG\x00" + write(CASES["tiny"])[4:]):
        with pytest.raises(FormatError, match=r"^not an hvqc file \(bad magic\)$"):
            read(data)


@pytest.mark.parametrize("version", [1, 4])
def test_other_versions(version):
    # 1: whole little-endian coder words (before the final word's zero bytes were dropped)
    data = write(CASES["tiny"])
    bumped = with_crc(data[:4] + bytes([version]) + data[5:-4])
    with pytest.raises(FormatError, match=rf"^unsupported format version {version} \(supported: 2, 3\)$"):
        read(bumped)


def test_version_2_files_still_read():
    # Version 3 kept version 2's layout and added a cut's extras (the colour correction).
    c = CASES["extras"]
    data = write(c)
    assert data[4] == VERSION == 3
    assert read(with_crc(data[:4] + bytes([2]) + data[5:-4])) == c


def test_truncate_drops_the_extras_of_the_cut_it_removes():
    h = Header("photo", HASH, 768, 512, "RGBA", 3, (3, 2, 1), groups=2)
    c = Container(h, (b"top", b"mid", b"low"), {1: b"alpha", COLOUR_TAG: b"colour"})  # 1: an alpha plane
    data = write(c)
    assert read(truncate(data, 1)).extras == c.extras           # the same cut: kept
    for lowest in (2, 3):
        assert read(truncate(data, lowest)).extras == {1: b"alpha"}


@pytest.mark.parametrize("values", [[], [0], [127, 128, 0], [2**35 - 1, 1, 300]])
def test_varints_round_trip(values):
    assert read_varints(pack_varints(values), len(values)) == values


@pytest.mark.parametrize("blob, count, message", [
    (b"\x01\x02", 1, "1 bytes after 1 varints"),
    (b"\x80", 1, "bad varint"),
    (b"\x01", 2, "bad varint"),
    (b"\xff" * 5 + b"\x01", 1, "bad varint"),
])
def test_bad_varints(blob, count, message):
    with pytest.raises(FormatError, match=f"^corrupt file: {message}$"):
        read_varints(blob, count)


@pytest.mark.parametrize("name", ["three_levels", "extras", "speech"])
def test_truncated_at_every_offset(name):
    data = write(CASES[name])
    for k in range(len(data)):
        with pytest.raises(FormatError) as info:
            read(data[:k])
        msg = str(info.value)
        if k < 4:
            assert msg == "not an hvqc file (bad magic)"
        else:
            assert msg == "truncated file: header incomplete" or \
                msg == f"truncated file: expected {len(data)} bytes, got {k}", (k, msg)
    assert "expected" in msg  # the last cut is past the header


def test_flipped_payload_byte():
    data = bytearray(write(CASES["three_levels"]))
    data[-10] ^= 0x01
    with pytest.raises(FormatError, match=r"^corrupt file: CRC32 mismatch$"):
        read(bytes(data))


def test_absurd_size():
    with pytest.raises(FormatError, match=r"^refusing absurd image size 70000x70000$"):
        read(craft(size=(70000, 70000)))
    for size in [(0, 5), (5, 0), (MAX_SIDE + 1, 1), (MAX_SIDE, MAX_SIDE)]:
        with pytest.raises(FormatError, match="refusing absurd image size"):
            read(craft(size=size))
    assert read(craft(size=(MAX_SIDE, 1))).header.width == MAX_SIDE


def test_size_checked_before_the_rest_of_the_file():
    # Nothing after the size is even present: the size is refused as soon as it's parsed.
    prefix = MAGIC + bytes([VERSION, 0, 5]) + b"photo" + HASH + leb128(1 << 30) + leb128(1)
    with pytest.raises(FormatError, match="refusing absurd image size"):
        read(prefix)


def test_trailing_bytes():
    with pytest.raises(FormatError, match=r"^corrupt file: 3 trailing bytes$"):
        read(write(CASES["tiny"]) + b"xyz")


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode=5), "unknown mode index 5"),
    (dict(flags=0x10), "unknown flag bits 0x10"),
    (dict(flags=0x08, tail=b"\x00"), "partial level with 0 coding groups"),
    (dict(flags=0x84), "unknown flag bits 0x84"),
    (dict(flags=0x02), "unknown modality 2"),
    (dict(flags=0x01, tail=leb128(0)), "speech file without a sample rate"),
    (dict(packed=(3 << 4) | 0, segments=()), "0 levels present"),
    (dict(packed=(1 << 4) | 2, segments=(b"a", b"b")), "2 levels present but the model has 1"),
    (dict(model=b""), "empty model id"),
    (dict(model=b"ph\xf6to"), "model id is not"),
    (dict(model=b"a" * 65), "model id is not"),
    (dict(raw_size=b"\x80" * 5 + b"\x01" + b"\x01"), "bad varint"),
])
def test_bad_header_fields(kwargs, message):
    with pytest.raises(FormatError, match=message) as info:
        read(craft(**kwargs))
    assert "\n" not in str(info.value)
    assert craft() and read(craft()).header.model == "photo"  # the baseline itself is valid


def test_extras_out_of_order():
    body = MAGIC + bytes([VERSION, 0, 1]) + b"m" + HASH + leb128(4) + leb128(4) + bytes([0, 0x11])
    body += bytes([2, 5, 1, 3, 1]) + leb128(1) + b"a" + b"b" + b"c"
    with pytest.raises(FormatError, match="increasing tag order"):
        read(with_crc(body))


def test_random_corruption_only_raises_format_error():
    data = write(CASES["extras"])
    rng = random.Random(0)
    for _ in range(2000):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            buf[rng.randrange(40)] = rng.randrange(256)  # hit the header where it matters
        try:
            read(bytes(buf))
        except FormatError:
            pass


@pytest.mark.parametrize("change, message", [
    (dict(model=""), "model id"),
    (dict(model="ph\u00f6to"), "model id"),
    (dict(model="x" * 65), "model id"),
    (dict(weights_hash=b"abc"), "weights_hash"),
    (dict(mode="CMYK"), "mode"),
    (dict(width=0), "absurd image size"),
    (dict(width=70000, height=70000), "absurd image size"),
    (dict(num_levels=16, levels=(16,)), "num_levels"),
    (dict(levels=(3, 1)), "levels"),
    (dict(levels=(2, 1)), "levels"),
    (dict(levels=()), "levels"),
    (dict(num_levels=1, levels=(1, 0)), "levels"),
    (dict(modality=2), "modality"),
    (dict(modality=1), "sample_rate"),
    (dict(sample_rate=8000), "sample_rate"),
])
def test_write_validates_header(change, message):
    c = make()
    with pytest.raises(ValueError, match=message):
        write(replace(c, header=replace(c.header, **change)))


def test_write_validates_segments_and_extras():
    c = make()
    with pytest.raises(ValueError, match="segments"):
        write(replace(c, segments=c.segments[:2]))
    with pytest.raises(ValueError, match="extras"):
        write(replace(c, extras={256: b""}))
    with pytest.raises(ValueError, match="extras"):
        write(replace(c, extras={1: "text"}))
