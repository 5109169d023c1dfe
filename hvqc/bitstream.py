"""The ``.hvqc`` container: magic, version, a compact binary header, payload segments, CRC32.

All integers are little-endian; ``varint`` is unsigned LEB128 of at most 5 bytes.
Layout::

    MAGIC(4) | version u8 | flags u8 | len(model) u8 | model ascii | weights_hash(4)
    | varint width | varint height | mode u8 | (num_levels << 4 | len(levels)) u8
    | [u8 groups, only when the partial flag is set]
    | [varint sample_rate, only when modality == 1]
    | u8 number of extras | per extra: tag u8 + varint length
    | per segment: varint segment length
    | extras bytes (tag order) | segment bytes (top level first) | CRC32 u32

The flags byte holds the modality in its low 2 bits, the ``joint`` bit (0x04) and
the ``partial`` bit (0x08: the finest level present carries only its first ``groups``
coding groups, a refinement between two levels; the decoder fills in the rest from
the prior); other bits must be 0. A segment is one range-coder stream
(:mod:`hvqc.entropy`): 32-bit words, big-endian, the final word's zero low bytes left out
(a reader pads them back), so its length need not be a multiple of 4 (version 2; version
1 wrote whole little-endian words). A split file (the default) has one coder segment per level
present, so levels can be dropped without a model (:func:`truncate`); a joint file
has all levels in one segment, which saves the coder's seal per level (7.5 bits on
average, up to 32) where files are tiny (digits, thumbnails). The
levels present are implied by ``num_levels`` and their count (the top ones,
consecutive), so no level numbers are stored. Version 3 (same layout) added extras
that describe the finest cut present (:data:`CUT_TAGS`: an image's colour correction,
:mod:`hvqc.colour`), which :func:`truncate` drops with the levels; version 2 files
still read. Every read is checked and raises
:class:`FormatError` (never another exception) with a one-line message, in this
order: magic, version, header completeness and varint length, image size (as
soon as it is parsed), declared length, CRC32, other header fields, trailing bytes.
"""

import struct
import zlib
from dataclasses import dataclass, field, replace

MAGIC = b"HVQC"
VERSION = 3
READABLE = (2, 3)   # version 3 added the colour correction (COLOUR_TAG); the layout is version 2's
MAX_SIDE = 1 << 16  # refuse width/height above this before any allocation
MAX_PIXELS = 1 << 28
MODES = ("L", "LA", "RGB", "RGBA", "I;16")
MODALITIES = (0, 1)  # 0 = image, 1 = speech
SPEECH_SAMPLES_TAG = 2  # extras tag of speech files: original sample count, u32 little-endian
COLOUR_TAG = 3  # extras tag of image files: the colour correction of the finest cut (hvqc.colour)
CUT_TAGS = frozenset({COLOUR_TAG})   # extras that describe the finest cut present: a cut drops them
MAX_LEVELS = 15
MAX_MODEL_LEN = 64
HASH_LEN = 4
_MAX_VARINT_BYTES = 5
_MODALITY_MASK = 0x03
_JOINT = 0x04
_PARTIAL = 0x08
_BLOB = (bytes, bytearray, memoryview)


class FormatError(ValueError):
    """A file that is not a valid .hvqc file; str(e) is a one-line user-facing message."""


@dataclass(frozen=True)
class Header:
    """Everything needed to decode a file apart from the payloads."""

    model: str  # stable model id, printable ascii, 1..64 chars, e.g. "photo"
    weights_hash: bytes  # exactly 4 bytes: prefix of the weights' sha256
    width: int  # 1..MAX_SIDE
    height: int  # 1..MAX_SIDE
    mode: str  # one of MODES, stored as its index
    num_levels: int  # levels in the model, 1..15
    levels: tuple[int, ...]  # levels present, top first, consecutive descending from num_levels
    modality: int = 0  # 0 = image, 1 = speech (width = 10 ms frames, height = 1)
    sample_rate: int = 0  # only for modality 1 (then >= 1)
    joint: bool = False  # all levels in one coder segment (else one segment per level)
    groups: int = 0  # coding groups of the finest level present (0 = all of them)


@dataclass(frozen=True)
class Container:
    """A whole ``.hvqc`` file."""

    header: Header
    segments: tuple[bytes, ...]  # one payload per level, top first (a single one if joint)
    extras: dict[int, bytes] = field(default_factory=dict)  # tag 0..255 -> bytes, e.g. 1 = alpha


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_size(w: int, h: int, exc: type[Exception]) -> None:
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE) or w * h > MAX_PIXELS:
        raise exc(f"refusing absurd image size {w}x{h}")


def _varint(n: int) -> bytes:
    if not 0 <= n < 1 << (7 * _MAX_VARINT_BYTES):
        raise ValueError(f"value {n} does not fit a {_MAX_VARINT_BYTES}-byte varint")
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pack_varints(values) -> bytes:
    """Unsigned LEB128 varints (at most 5 bytes each), back to back."""
    return b"".join(_varint(v) for v in values)


def read_varints(data: bytes, count: int) -> list[int]:
    """Exactly ``count`` varints that fill ``data``; FormatError otherwise."""
    r = _Reader(bytes(data), 0)
    try:
        values = [r.varint() for _ in range(count)]
    except FormatError:
        raise FormatError("corrupt file: bad varint") from None
    if r.pos != len(data):
        raise FormatError(f"corrupt file: {len(data) - r.pos} bytes after {count} varints")
    return values


def without_cut_tags(extras: dict[int, bytes]) -> dict[int, bytes]:
    """``extras`` less those that describe one cut (:data:`CUT_TAGS`)."""
    return {t: b for t, b in extras.items() if t not in CUT_TAGS}


def cut_extras(extras: dict[int, bytes], source: Header, cut: Header) -> dict[int, bytes]:
    """The extras a cut (``cut``'s levels and groups) of a file (header ``source``) keeps:
    all of them for the file's own cut, else all but those that describe it (:data:`CUT_TAGS`)."""
    same = (tuple(cut.levels), cut.groups) == (tuple(source.levels), source.groups)
    return extras if same else without_cut_tags(extras)


class _Reader:
    """Bounds-checked cursor over the header bytes."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise FormatError("truncated file: header incomplete")
        chunk, self.pos = self.data[self.pos:end], end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = self.u8()
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise FormatError("corrupt file: bad varint")


def _validate(c: Container) -> None:
    """Raise ValueError if ``c`` cannot be written as a valid file."""
    h, m = c.header, c.header.model
    if not (isinstance(m, str) and 1 <= len(m) <= MAX_MODEL_LEN and m.isascii() and m.isprintable()):
        raise ValueError(f"model id must be 1..{MAX_MODEL_LEN} printable ascii chars, got {m!r}")
    if not isinstance(h.weights_hash, (bytes, bytearray)) or len(h.weights_hash) != HASH_LEN:
        raise ValueError(f"weights_hash must be exactly {HASH_LEN} bytes, got {h.weights_hash!r}")
    if not (_is_int(h.width) and _is_int(h.height)):
        raise ValueError(f"width and height must be ints, got {h.width!r}x{h.height!r}")
    _check_size(h.width, h.height, ValueError)
    if h.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {h.mode!r}")
    if not (_is_int(h.num_levels) and 1 <= h.num_levels <= MAX_LEVELS):
        raise ValueError(f"num_levels must be an int in 1..{MAX_LEVELS}, got {h.num_levels!r}")
    lv = tuple(h.levels)
    if not lv or lv != tuple(range(h.num_levels, h.num_levels - len(lv), -1)) or lv[-1] < 1:
        raise ValueError(f"levels must be consecutive descending from {h.num_levels} down to >= 1, "
                         f"got {h.levels!r}")
    if h.modality not in MODALITIES or not _is_int(h.modality):
        raise ValueError(f"modality must be one of {MODALITIES}, got {h.modality!r}")
    if h.modality == 1 and not (_is_int(h.sample_rate) and 1 <= h.sample_rate < 1 << 32):
        raise ValueError(f"sample_rate must be a positive int for modality 1, got {h.sample_rate!r}")
    if h.modality != 1 and h.sample_rate != 0:
        raise ValueError(f"sample_rate is only allowed for modality 1, got {h.sample_rate!r}")
    if not (_is_int(h.groups) and 0 <= h.groups <= 255):
        raise ValueError(f"groups must be an int in 0..255, got {h.groups!r}")
    if not isinstance(h.joint, bool):
        raise ValueError(f"joint must be a bool, got {h.joint!r}")
    need = 1 if h.joint else len(lv)
    if len(c.segments) != need or not all(isinstance(s, _BLOB) for s in c.segments):
        raise ValueError(f"need {need} byte segments ({'joint' if h.joint else 'one per level'}), "
                         f"got {len(c.segments)}")
    if len(c.extras) > 255:
        raise ValueError(f"at most 255 extras, got {len(c.extras)}")
    for tag, blob in c.extras.items():
        if not (_is_int(tag) and 0 <= tag <= 255 and isinstance(blob, _BLOB)):
            raise ValueError(f"extras must map a tag 0..255 to bytes, got tag {tag!r}")


def write(c: Container) -> bytes:
    """Serialise a container; extras are written in tag order.

    Raises:
        ValueError: If the container is invalid (model id, hash, mode, size, levels, segments).
    """
    _validate(c)
    h = c.header
    model = h.model.encode("ascii")
    extras = sorted(c.extras.items())
    out = bytearray(MAGIC)
    flags = h.modality | (_JOINT if h.joint else 0) | (_PARTIAL if h.groups else 0)
    out += struct.pack("<BBB", VERSION, flags, len(model)) + model + bytes(h.weights_hash)
    out += _varint(h.width) + _varint(h.height)
    out += struct.pack("<BB", MODES.index(h.mode), h.num_levels << 4 | len(h.levels))
    out += bytes([h.groups]) if h.groups else b""
    out += _varint(h.sample_rate) if h.modality == 1 else b""
    out += bytes([len(extras)]) + b"".join(bytes([t]) + _varint(len(b)) for t, b in extras)
    out += b"".join(_varint(len(s)) for s in c.segments)
    out += b"".join(b for _, b in extras) + b"".join(c.segments)
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


def _parse(data: bytes) -> tuple[Header, list[tuple[int, int]], list[int], int, int]:
    """Check a whole file; return (header, extras (tag, length), segment lengths, body start, total)."""
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise FormatError("not an hvqc file (bad magic)")
    r = _Reader(data, len(MAGIC))
    version = r.u8()
    if version not in READABLE:
        raise FormatError(f"unsupported format version {version} "
                          f"(supported: {', '.join(map(str, READABLE))})")
    flags = r.u8()
    model_raw = r.take(r.u8())
    weights_hash = r.take(HASH_LEN)
    width, height = r.varint(), r.varint()
    _check_size(width, height, FormatError)
    mode_idx, packed = r.u8(), r.u8()
    num_levels, count = packed >> 4, packed & 0x0F
    groups = r.u8() if flags & _PARTIAL else 0
    modality = flags & _MODALITY_MASK
    sample_rate = r.varint() if modality == 1 else 0
    extras = [(r.u8(), r.varint()) for _ in range(r.u8())]
    joint = bool(flags & _JOINT)
    seg_lens = [r.varint() for _ in range(1 if joint else count)]
    body = r.pos
    total = body + sum(n for _, n in extras) + sum(seg_lens) + 4
    if len(data) < total:
        raise FormatError(f"truncated file: expected {total} bytes, got {len(data)}")
    (stored,) = struct.unpack_from("<I", data, total - 4)
    if zlib.crc32(memoryview(data)[:total - 4]) != stored:
        raise FormatError("corrupt file: CRC32 mismatch")
    if flags & ~(_MODALITY_MASK | _JOINT | _PARTIAL):
        raise FormatError(f"corrupt file: unknown flag bits 0x{flags:02x}")
    if flags & _PARTIAL and groups == 0:
        raise FormatError("corrupt file: partial level with 0 coding groups")
    if modality not in MODALITIES:
        raise FormatError(f"corrupt file: unknown modality {modality}")
    if modality == 1 and sample_rate == 0:
        raise FormatError("corrupt file: speech file without a sample rate")
    if mode_idx >= len(MODES):
        raise FormatError(f"corrupt file: unknown mode index {mode_idx}")
    if count == 0 or count > num_levels:
        raise FormatError(f"corrupt file: {count} levels present but the model has {num_levels}")
    if not model_raw:
        raise FormatError("corrupt file: empty model id")
    if len(model_raw) > MAX_MODEL_LEN or not model_raw.isascii() or not model_raw.decode().isprintable():
        raise FormatError("corrupt file: model id is not 1..64 printable ascii chars")
    tags = [t for t, _ in extras]
    if any(a >= b for a, b in zip(tags, tags[1:])):
        raise FormatError("corrupt file: extras not in increasing tag order")
    if len(data) > total:
        raise FormatError(f"corrupt file: {len(data) - total} trailing bytes")
    levels = tuple(range(num_levels, num_levels - count, -1))
    header = Header(model_raw.decode(), weights_hash, width, height, MODES[mode_idx],
                    num_levels, levels, modality, sample_rate, joint, groups)
    return header, extras, seg_lens, body, total


def peek_header(data: bytes) -> tuple[Header, list[int], int]:
    """Check a whole file (CRC included) without copying its payloads.

    Returns:
        ``(header, payload byte length per segment, total file bytes)``: one segment
        per level present, or a single one for a joint file.

    Raises:
        FormatError: If ``data`` is not a valid ``.hvqc`` file.
    """
    header, _, seg_lens, _, total = _parse(bytes(data))
    return header, seg_lens, total


def read(data: bytes) -> Container:
    """Parse and check a complete ``.hvqc`` file.

    Raises:
        FormatError: If ``data`` is not a valid ``.hvqc`` file.
    """
    data = bytes(data)
    header, extras, seg_lens, pos, _ = _parse(data)
    blobs = []
    for n in [n for _, n in extras] + seg_lens:
        blobs.append(data[pos:pos + n])
        pos += n
    return Container(header, tuple(blobs[len(extras):]),
                     {tag: blob for (tag, _), blob in zip(extras, blobs)})


def truncate(data: bytes, lowest_level: int) -> bytes:
    """Drop the levels below ``lowest_level`` and re-write header and CRC.

    Args:
        data: A complete ``.hvqc`` file; its extras are kept, but for those that describe
            its finest cut (:data:`CUT_TAGS`) where that cut goes.
        lowest_level: The finest level to keep; it and all levels above it stay (a
            partial finest level stays partial if it is the one kept).

    Raises:
        FormatError: If ``data`` is invalid or ``lowest_level`` is not present in it, or
            the file is joint (its levels share one coder stream: re-code them with the
            model, :func:`hvqc.codec.recode`).
    """
    c = read(data)
    if c.header.joint:
        raise FormatError("a joint-stream file cannot be cut without its model")
    levels = c.header.levels
    if lowest_level not in levels:
        raise FormatError(f"cannot truncate to level {lowest_level}: file holds levels "
                          f"{', '.join(map(str, levels))}")
    keep = levels.index(lowest_level) + 1
    header = replace(c.header, levels=levels[:keep],
                     groups=c.header.groups if keep == len(levels) else 0)
    return write(Container(header, c.segments[:keep], cut_extras(c.extras, c.header, header)))
