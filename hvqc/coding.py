"""Model-agnostic coding: code indices <-> entropy-coded segments, and files cut by level.

``encode``/``decode`` (signal <-> indices) belong to the model; this module does
``compress``/``decompress`` (indices <-> bytes) for any modality. The image path
(:mod:`hvqc.codec`) and the speech path (:mod:`hvqc.speech`) wrap it and never
import each other.

A file is scalable: the top level's codes come first, coded under the
unconditional prior, then each lower level as a refinement coded under its prior
conditioned on the prediction from the level above. Dropping the lower levels
(:func:`hvqc.bitstream.truncate`) leaves a file that decodes to a coarser signal.
A *joint* file codes all its levels into one stream instead, which saves up to 32
bits of coder flush per level (it matters for tiny images, such as 32x32 digits);
it can still be cut, but only by re-coding with the model (:func:`recode`).

Between two levels, a file can also stop after the first coding groups of its
finest level (a *refinement*, the header's ``groups``); the decoder fills the
positions it lacks with the prior's mean codeword given the groups it has.
:func:`compress_cuts` codes every level and refinement of an item in one pass
through the priors (:func:`cut_files`), which is how a target rate is met
(:func:`pick_level`).

Everything that feeds the coder (predictions from upper levels, prior logits) runs
in float64 and reaches the coder as integer tables (:mod:`hvqc.entropy`), so
encoder and decoder agree bit for bit across thread counts.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from . import bitstream, entropy
from .zoo import LoadedModel, ModelError, load

__all__ = ["CompressResult", "group_pmfs", "num_groups", "compress_codes", "compress_cuts", "decompress_codes",
           "write_cut", "cut_files", "file_cuts", "cut_name", "decode_levels", "reconstruct", "pick_level", "level_shapes", "default_joint", "default_descent",
           "padded_size", "read_codes", "recode", "model_for"]


@dataclass
class CompressResult:
    """A coded file and what went into it.

    Attributes:
        data: the whole ``.hvqc`` file.
        levels: level numbers present, top first (1 = finest).
        payload_bytes: bytes of each level's segment, in ``levels`` order (a joint
            file has one segment).
        estimated_bits: ``-log2 p`` of each level's codes under the prior.
    """

    data: bytes
    levels: tuple[int, ...]
    payload_bytes: list[int]
    estimated_bits: list[float]


def group_pmfs(prior, indices: torch.Tensor, cond: torch.Tensor | None, groups: int = 0):
    """Yield ``(group, mask, pmf)`` for each coding group of one level of one item, in
    coding order (the first ``groups`` only, if given): ``pmf`` is the integer table
    ``[n, K]`` of the group's positions (row-major).

    ``indices`` ``[1, *S]`` is read lazily: a decoder fills ``indices[0][mask]`` before
    asking for the next group; an encoder passes the finished codes. Both sides run
    exactly this code, so they derive the same tables.
    """
    shape = tuple(indices.shape[1:])
    base = prior.cond_term(cond, shape)
    known = torch.zeros(shape, dtype=torch.bool)
    for g, (mask, offset) in enumerate(zip(prior.masks(shape), prior.offsets())):
        if groups and g >= groups:
            return
        if not mask.any():                  # a grid smaller than the phase
            continue
        logits = prior.logits_at(indices, known, base, offset)
        yield g, mask, entropy.pmf_from_logits(logits[0].flatten(1).t().double().numpy())
        known = known | mask


def num_groups(lm: LoadedModel, level: int) -> int:
    """Coding groups of a level (0-based): a file can stop after any of them."""
    return len(lm.model.levels[level].prior.offsets())


def known_positions(lm: LoadedModel, level: int, shape: tuple[int, ...], groups: int) -> torch.Tensor:
    """The positions of a level's grid that its first ``groups`` coding groups hold."""
    return lm.model.levels[level].prior.sent(shape, groups)


@torch.no_grad()
def _cond(lm: LoadedModel, level: int, upper: torch.Tensor | None) -> torch.Tensor | None:
    return None if upper is None else lm.model64.predict(level + 1, upper, torch.float64)


@torch.no_grad()
def compress_codes(lm: LoadedModel, codes: list[torch.Tensor], lowest: int,
                   joint: bool = False, groups: int = 0) -> tuple[list[bytes], list[float]]:
    """Entropy-code levels ``top .. lowest`` (0-based) of one item; ``codes[l]`` is ``[1, *S_l]``.
    With ``groups``, level ``lowest`` stops after its first ``groups`` coding groups.

    Returns the segments (one per level, top first; a single one if ``joint``) and
    the ideal bits of each level, top first.
    """
    m, segs, bits = lm.model64, [], []
    shared = entropy.Encoder() if joint else None
    for l in range(m.num_levels - 1, lowest - 1, -1):
        prior = m.levels[l].prior
        cond = _cond(lm, l, codes[l + 1] if l + 1 < m.num_levels else None)
        enc, b = shared or entropy.Encoder(), 0.0
        for _, mask, pmf in group_pmfs(prior, codes[l], cond, groups if l == lowest else 0):
            sym = codes[l][0][mask].numpy()
            enc.encode(sym, pmf)
            b += entropy.cost_bits(sym, pmf)
        if not joint:
            segs.append(enc.finish())
        bits.append(b)
    if joint:
        segs.append(shared.finish())
    return segs, bits


@torch.no_grad()
def decompress_codes(lm: LoadedModel, segments: list[bytes], shapes: list[tuple[int, ...]],
                     count: int | None = None, joint: bool = False,
                     groups: int = 0) -> list[torch.Tensor]:
    """Inverse of :func:`compress_codes`: segments top first; ``shapes[l]`` is level ``l``'s grid.

    Args:
        count: levels to decode, top down (default: one per segment). A joint stream
            holding more levels than ``count`` is read only as far as needed.
        joint: ``segments`` is a single stream holding every level.
        groups: the last decoded level holds only its first ``groups`` coding groups
            (its other positions are returned as 0).

    Returns the codes of the decoded levels, top level first.
    """
    m, out, upper = lm.model64, [], None
    top = m.num_levels - 1
    count = len(segments) if count is None else count
    shared = entropy.Decoder(segments[0]) if joint else None
    for i in range(count):
        l = top - i
        prior = m.levels[l].prior
        cond = _cond(lm, l, upper)
        idx = torch.zeros((1, *shapes[l]), dtype=torch.long)
        dec = shared or entropy.Decoder(segments[i])
        for _, mask, pmf in group_pmfs(prior, idx, cond, groups if i == count - 1 else 0):
            idx[0][mask] = torch.from_numpy(dec.decode(pmf))
        out.append(idx)
        upper = idx
    return out


@torch.no_grad()
def compress_cuts(lm: LoadedModel, codes: list[torch.Tensor], lowest: int = 0,
                  joint: bool = False, refinements: bool = True
                  ) -> tuple[dict[tuple[int, int], list[bytes]], list[float]]:
    """Every cut of one item's codes down to level ``lowest`` (0-based), in one pass
    through the priors (without ``refinements``, the whole levels only).

    Returns ``(cuts, bits)``: ``cuts[(level, groups)]`` holds the segments
    :func:`compress_codes` writes for ``(lowest=level, groups)`` (``groups`` 0: the whole
    level, else its first ``groups`` coding groups), ``bits`` the ideal bits of each
    level, top first. A split cut shares the whole segments of the levels above it; a
    joint cut has its own stream.
    """
    m = lm.model64
    n = m.num_levels
    keys = [(l, g) for l in range(n - 1, lowest - 1, -1)
            for g in (*range(1, num_groups(lm, l) if refinements else 1), 0)]
    encs = {k: entropy.Encoder() for k in keys}
    bits = []
    for l in range(n - 1, lowest - 1, -1):
        cond = _cond(lm, l, codes[l + 1] if l + 1 < n else None)
        b = 0.0
        for j, mask, pmf in group_pmfs(m.levels[l].prior, codes[l], cond):
            sym = codes[l][0][mask].numpy()
            for (kl, kg), enc in encs.items():
                if (kl == l and (kg == 0 or j < kg)) or (joint and kl < l):
                    enc.encode(sym, pmf)
            b += entropy.cost_bits(sym, pmf)
        bits.append(b)
    done = {k: e.finish() for k, e in encs.items()}
    cuts = {(l, g): [done[(l, g)]] if joint else [done[(u, 0)] for u in range(n - 1, l, -1)] + [done[(l, g)]]
            for l, g in keys}
    return cuts, bits


def level_shapes(lm: LoadedModel, size: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Latent grid of every level for a signal of ``size`` (already padded)."""
    cfg = lm.model.config
    return [tuple(s // cfg.stride(l) for s in size) for l in range(len(cfg.levels))]


def default_joint(lm: LoadedModel) -> bool:
    """Whether a model's files are joint by default (its manifest's ``"stream": "joint"``)."""
    return lm.info.get("stream", "split") == "joint"


def default_descent(lm: LoadedModel) -> str:
    """How a file cut above level 1 is decoded below its finest level (the manifest's
    ``"descent"``): ``"hqa"`` re-quantizes each prediction from above
    (:meth:`~hvqc.hierarchy.HierarchicalVQVAE.descend`), ``"mean"`` takes each prior's
    mean codeword (:meth:`~hvqc.hierarchy.HierarchicalVQVAE.decode_mean`). It changes
    only the decoded signal, never a file."""
    return lm.info.get("descent", "hqa")


def padded_size(lm: LoadedModel, h: bitstream.Header) -> tuple[int, ...]:
    """The signal size the model coded, padded to its top stride: ``(frames,)`` for
    speech (``width`` frames), ``(height, width)`` for images."""
    stride = lm.model.config.stride(lm.model.num_levels - 1)
    if h.modality == 1:
        return (-(-h.width // stride) * stride,)
    return -(-h.height // stride) * stride, -(-h.width // stride) * stride


def file_groups(lm: LoadedModel, h: bitstream.Header, count: int) -> int:
    """Coding groups held by the finest of the top ``count`` levels of a file (0: all)."""
    if count < len(h.levels) or not h.groups:
        return 0
    have = num_groups(lm, h.levels[-1] - 1)
    if h.groups >= have:
        raise bitstream.FormatError(f"corrupt file: {h.groups} coding groups of level "
                                    f"{h.levels[-1]}, which has {have}")
    return h.groups


def read_codes(lm: LoadedModel, c: bitstream.Container, count: int) -> list[torch.Tensor]:
    """The codes of the top ``count`` levels of a container, top first (a partial finest
    level has zeros where it holds no codes)."""
    h = c.header
    segs = list(c.segments) if h.joint else list(c.segments[:count])
    try:
        return decompress_codes(lm, segs, level_shapes(lm, padded_size(lm, h)), count, h.joint,
                                groups=file_groups(lm, h, count))
    except entropy.CoderError as e:
        raise bitstream.FormatError(str(e)) from None


@torch.no_grad()
def decode_levels(lm: LoadedModel, c: bitstream.Container, level: int | None = None) -> torch.Tensor:
    """The signal ``[1, C, *padded size]`` decoded from the levels of ``c`` down to
    ``level`` (1-based; default: the finest level present), through HQA's descent."""
    h = c.header
    count = len(h.levels)
    if level is not None:
        if level not in h.levels:
            raise ValueError(f"level {level} not in file (holds {', '.join(map(str, h.levels))})")
        count = h.levels.index(level) + 1
    codes = read_codes(lm, c, count)
    n = lm.model.num_levels
    return reconstruct(lm, [None] * (n - len(codes)) + codes[::-1], n - len(codes),
                       file_groups(lm, h, count))


@torch.no_grad()
def reconstruct(lm: LoadedModel, codes: list[torch.Tensor | None], lowest: int,
                groups: int = 0) -> torch.Tensor:
    """The signal ``[1, C, *padded size]`` a file cut at level ``lowest`` (0-based; with
    ``groups``, a refinement by its first coding groups) decodes to, from the codes of
    the levels it holds (``codes[l]`` ``[1, *S_l]``, bottom first). The decoder and the
    encoder (which fits the file's colour correction to it) both call this."""
    low = codes[lowest]
    if groups:                                     # a refinement: the prior fills the rest
        known = known_positions(lm, lowest, tuple(low.shape[1:]), groups)
        upper = codes[lowest + 1] if lowest + 1 < lm.model.num_levels else None
        return lm.model.decode_mean(lowest, low * known, known, upper)
    if lowest and default_descent(lm) == "mean":
        return lm.model.decode_mean(lowest, low)
    down = lm.model64.descend(lowest, low)
    return lm.model.predict(0, down[0])


def recode(data: bytes, level: int, lm: LoadedModel | None = None) -> bytes:
    """Cut any file (split or joint) down to ``level`` as its own layout: split files
    are cut without the model (:func:`hvqc.bitstream.truncate`); joint files are
    decoded to codes and re-coded, giving the same bytes as encoding at ``level``. Both
    drop the extras that describe the file's finest cut (:data:`hvqc.bitstream.CUT_TAGS`)
    when they cut it."""
    c = bitstream.read(data)
    h = c.header
    if not h.joint:
        return bitstream.truncate(data, level)
    if level not in h.levels:
        raise bitstream.FormatError(f"cannot truncate to level {level}: file holds levels "
                                    f"{', '.join(map(str, h.levels))}")
    lm = model_for(h, lm)
    count = h.levels.index(level) + 1
    top = lm.model.num_levels - 1
    groups = file_groups(lm, h, count)
    codes = dict(zip(range(top, top - count, -1), read_codes(lm, c, count)))
    segs, _ = compress_codes(lm, [codes.get(l) for l in range(top + 1)], level - 1, True, groups)
    header = replace(h, levels=h.levels[:count], groups=groups)
    return bitstream.write(bitstream.Container(header, tuple(segs), bitstream.cut_extras(c.extras, h, header)))


def write_cut(lm: LoadedModel, codes: list[torch.Tensor], header: bitstream.Header,
              extras: dict[int, bytes], level: int, groups: int = 0) -> CompressResult:
    """The file of one item's codes (``[1, *S_l]`` per level, bottom first) cut at
    ``level`` (1-based; ``groups`` > 0: a refinement by its first coding groups), under
    ``header`` (its levels and groups are filled in; ``joint`` picks the layout)."""
    n = lm.model.num_levels
    segs, bits = compress_codes(lm, codes, level - 1, header.joint, groups)
    levels = tuple(range(n, level - 1, -1))
    h = replace(header, levels=levels, groups=groups)
    return CompressResult(bitstream.write(bitstream.Container(h, tuple(segs), extras)), levels,
                          [len(s) for s in segs], bits)


def cut_files(lm: LoadedModel, codes: list[torch.Tensor], header: bitstream.Header,
              extras: dict[int, bytes], lowest: int = 1,
              refinements: bool = True) -> list[tuple[bytes, int, int]]:
    """Every file one item's codes can be cut to, down to level ``lowest`` (1-based),
    finest (largest) first: ``(bytes, level, groups)`` for each level and (with
    ``refinements``) each refinement of it by its first ``groups`` coding groups (0 =
    the whole level). One
    pass through the priors (:func:`compress_cuts`); the same bytes as
    :func:`write_cut` for each. Extras that describe ``header``'s own cut
    (:func:`hvqc.bitstream.cut_extras`) go into that cut's file only."""
    n = lm.model.num_levels
    cuts, _ = compress_cuts(lm, codes, lowest - 1, header.joint, refinements)
    out = []
    for (l, g), segs in cuts.items():
        h = replace(header, levels=tuple(range(n, l, -1)), groups=g)
        own = bitstream.cut_extras(extras, header, h)
        out.append((bitstream.write(bitstream.Container(h, tuple(segs), own)), l + 1, g))
    return out[::-1]


def file_cuts(data: bytes, lm: LoadedModel | None = None) -> list[tuple[bytes, int, int]]:
    """:func:`cut_files` of a complete file (decoded to its codes first)."""
    c = bitstream.read(data)
    h = c.header
    if h.groups:
        raise ValueError("the file is already a refinement; cut the complete file")
    lm = model_for(h, lm)
    n = lm.model.num_levels
    codes = dict(zip(range(n - 1, -1, -1), read_codes(lm, c, len(h.levels))))
    return cut_files(lm, [codes.get(l) for l in range(n)], h, c.extras, h.levels[-1])


def cut_name(lm: LoadedModel, level: int, groups: int) -> str:
    """``"level 2"`` or, for a refinement, ``"level 2, 3 of 4 groups"``."""
    return f"level {level}" + (f", {groups} of {num_groups(lm, level - 1)} groups" if groups else "")


def pick_level(cuts: list[tuple[bytes, int, int]], size: float, target: float, unit: str,
               lm: LoadedModel) -> tuple[bytes, int, int, str]:
    """The finest of ``cuts`` (:func:`cut_files`, finest first) whose whole file is at or
    below ``target`` (rate = ``8 * bytes / size``: ``size`` in pixels for bpp, in
    milliseconds for kbps). Returns ``(bytes, level, groups, note)``; if no cut fits,
    the coarsest with a note saying so."""
    for cut, level, groups in cuts:
        if 8 * len(cut) / size <= target:
            return cut, level, groups, ""
    cut, level, groups = cuts[-1]
    return cut, level, groups, (f"no level reaches {target:g} {unit}; wrote the coarsest "
                                f"({cut_name(lm, level, groups)}, {8 * len(cut) / size:.4f} {unit})")


def model_for(header: bitstream.Header, lm: LoadedModel | None = None) -> LoadedModel:
    """The installed model a file names, checked against the file's weights hash."""
    lm = lm or load(header.model)
    if lm.name != header.model or lm.hash_prefix != header.weights_hash:
        raise ModelError(f"file was coded with model {header.model}@{header.weights_hash.hex()} but "
                         f"the installed one is {lm.name}@{lm.hash_prefix.hex()}")
    if lm.model.num_levels != header.num_levels:
        raise ModelError(f"file expects {header.num_levels} levels, model {lm.name!r} has "
                         f"{lm.model.num_levels}")
    return lm


