"""The image codec: images <-> ``.hvqc`` files, on top of :mod:`hvqc.coding`.

``encode``/``decode`` (signal <-> indices) belong to the model; :mod:`hvqc.coding`
does ``compress``/``decompress`` (indices <-> bytes) for every modality (its names
are re-exported here); this module wraps them for images.

How levels are coded, cut and kept bit-exact is described in :mod:`hvqc.coding`.
"""
from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Callable, NamedTuple

import numpy as np
import torch
from PIL import Image

from . import bitstream, colour
from .coding import (CompressResult, _cond, compress_codes, decode_levels, decompress_codes,  # noqa: F401
                     cut_files, default_descent, default_joint, file_cuts, level_shapes, model_for,
                     num_groups, padded_size, pick_level, read_codes, reconstruct, recode, write_cut)
from .image import MAX_IMAGE_PIXELS, MODES, from_tensor, pad_to, to_channels, to_tensor
from .losses import image_distortion
from .search import SearchSettings, search_codes
from .zoo import LoadedModel

__all__ = ["CompressResult", "compress_codes", "decompress_codes", "compress_image", "compress_image_to",
           "check_search", "searchable_levels", "colour_log_slope", "SEARCH_MAX_PIXELS",
           "decompress_image", "recode", "scored_cuts", "screened_cuts", "SCREEN_MARGIN", "SCREEN_MARGIN_TOP",
           "screen_levels", "compress_image_rd", "rd_cost", "pick_rd", "level_shapes",
           "default_joint", "ALPHA_TAG"]

ALPHA_TAG = 1   # extras tag: zlib-deflated 8-bit alpha plane, row-major
SEARCH_MAX_PIXELS = 4_000_000   # the search's backward pass: about 1.3 GB in all for Kodak's 0.4 MP


def searchable_levels(lm: LoadedModel) -> list[int]:
    """The levels (1-based) whose codes the search (:mod:`hvqc.search`) can look for:
    level 1, and the levels above when the model decodes them through its priors' means
    (``"descent": "mean"``), the path the search scores them on."""
    return list(range(1, lm.model.num_levels + 1)) if default_descent(lm) == "mean" else [1]


def colour_log_slope(lm: LoadedModel) -> float | None:
    """The log-slope of a model's rate-distortion curve that its files weigh a colour
    correction against (its manifest's ``"colour_log_slope"``, :func:`hvqc.colour.fit`);
    None: its files carry none."""
    slope = lm.info.get("colour_log_slope")
    return None if slope is None else float(slope)


def check_search(lm: LoadedModel, level: int) -> None:
    """Refuse a search at a level :func:`searchable_levels` leaves out."""
    if level not in searchable_levels(lm):
        raise ValueError(f"the search above level 1 needs a model decoded through its priors' "
                         f"means; {lm.name!r} re-quantizes (descent \"hqa\")")


class _Item(NamedTuple):
    """An image made ready for coding (:func:`_item`)."""

    codes: list[torch.Tensor]                         # every level, bottom first
    encoded: list[torch.Tensor]                       # the encoder's, before any search
    header: bitstream.Header                          # levels to be filled in
    extras: dict[int, bytes]                          # those of every cut (alpha)
    with_colour: Callable[[bytes, int, int], bytes]   # (file, level, groups) -> file
    scored: Callable[[bytes, int, int], tuple[bytes, float]]  # -> (file, distortion)


def _item(lm: LoadedModel, img: Image.Image, joint: bool | None,
          search: SearchSettings | None = None, level: int = 1,
          encoded: list[torch.Tensor] | None = None, groups: int = 0, lowest: int = 1) -> _Item:
    """An image's codes (every level, bottom first; with ``search``, those of ``level``
    searched), the file header, the extras of every cut, ``with_colour(data, level,
    groups)``, which adds a cut's colour correction to its file where one pays (decoding
    the cut to fit it), and ``scored(data, level, groups)``, which returns that file and
    the training distortion (:func:`hvqc.losses.image_distortion`) of what it decodes to
    against the image. ``encoded``: the encoder's codes of this image, when an earlier
    call made them (:attr:`_Item.encoded`; not encoded again). ``groups``: the search
    looks for the codes of that refinement of ``level`` (:func:`hvqc.search.search_codes`).
    ``lowest``: the finest level (1-based) whose cuts will be written; the levels below
    it get no codes (None)."""
    if lm.modality != "image":
        raise ValueError(f"model {lm.name!r} is a {lm.modality} model, not an image model")
    if img.mode not in MODES:
        raise ValueError(f"unsupported image mode {img.mode!r}")
    n = lm.model.num_levels
    searching = search is not None and search.steps > 0
    if searching:                            # refused before any encoding
        check_search(lm, level)
        if img.width * img.height > SEARCH_MAX_PIXELS:
            raise ValueError(f"--search takes images up to {SEARCH_MAX_PIXELS // 10**6} million pixels "
                             f"(its gradients need about 2.5 kB a pixel); this one has "
                             f"{img.width * img.height}: encode it without --search")
    x, alpha = to_tensor(img)
    target = to_channels(x, lm.model.config.channels)
    xp = pad_to(target, lm.model.config.stride(n - 1))
    codes = encoded = lm.model.encode(xp, lowest - 1) if encoded is None else encoded
    if searching:
        codes = search_codes(lm.model, xp, encoded, level - 1, image_distortion, img.width * img.height,
                             search, crop=(img.height, img.width), groups=groups)
    extras = {ALPHA_TAG: zlib.compress(alpha.tobytes(), 9)} if alpha is not None else {}
    header = bitstream.Header(model=lm.name, weights_hash=lm.hash_prefix, width=img.width,
                              height=img.height, mode=img.mode, num_levels=n, levels=(),
                              joint=default_joint(lm) if joint is None else joint)
    slope = colour_log_slope(lm)

    def coloured(data: bytes, cut: int, groups: int, decoded: bool) -> tuple[bytes, torch.Tensor | None]:
        """The file of one cut with its colour correction, where one pays
        (:mod:`hvqc.colour`), and, if ``decoded`` (else None), the signal it decodes to,
        ``[1, C, H, W]`` before the decoder's clamping and rounding. The fit needs the
        cut decoded; applying the map is left to callers that want the signal."""
        if slope is None and not decoded:
            return data, None
        y = reconstruct(lm, codes, cut - 1, groups)[..., : img.height, : img.width]
        blob = None if slope is None else colour.fit(y, target, 8 * len(data), slope)
        if blob is None:
            return data, y if decoded else None
        c = bitstream.read(data)
        return (bitstream.write(replace(c, extras={**c.extras, bitstream.COLOUR_TAG: blob})),
                colour.apply(y, blob) if decoded else None)

    def scored(data: bytes, cut: int, groups: int) -> tuple[bytes, float]:
        data, y = coloured(data, cut, groups, True)
        y = y.clamp(0, 1).mul(255).round().div(255)   # the 8-bit image the decoder writes
        return data, float(image_distortion(y, target))

    return _Item(codes, encoded, header, extras, lambda data, cut, groups: coloured(data, cut, groups, False)[0], scored)


@torch.no_grad()
def compress_image(lm: LoadedModel, img: Image.Image, level: int = 1,
                   joint: bool | None = None, groups: int = 0,
                   search: SearchSettings | None = None) -> CompressResult:
    """Code an image (a :data:`hvqc.image.MODES` mode) down to ``level`` (1 = finest).

    ``joint`` codes all levels into one stream (default: :func:`default_joint`).
    ``groups`` (1 .. groups of the level - 1) sends only the first coding groups of
    ``level``: a rate between it and the level above, the rest filled in by its prior.
    ``search`` looks for better codes of ``level`` than the encoder's (:mod:`hvqc.search`).
    """
    n = lm.model.num_levels
    if not 1 <= level <= n:
        raise ValueError(f"level must be in 1..{n} for model {lm.name!r}, got {level}")
    if groups and not 0 < groups < num_groups(lm, level - 1):
        raise ValueError(f"groups must be in 1..{num_groups(lm, level - 1) - 1} for level {level} "
                         f"of model {lm.name!r}, got {groups}")
    it = _item(lm, img, joint, search, level, groups=groups, lowest=level)
    res = write_cut(lm, it.codes, it.header, it.extras, level, groups)
    return replace(res, data=it.with_colour(res.data, level, groups))


@torch.no_grad()
def compress_image_to(lm: LoadedModel, img: Image.Image, bpp: float, joint: bool | None = None,
                      search: SearchSettings | None = None) -> tuple[bytes, int, int, str]:
    """The finest level or refinement of an image whose whole file fits ``bpp``, from one
    encode and one pass through the priors (:func:`cut_files`), with the chosen cut's
    colour correction where the file still fits with it (one decode). With ``search``,
    the codes of the chosen cut (its level, or that refinement of it) are then searched
    for (:func:`hvqc.search.search_codes`), and the searched file is kept where it still
    fits. Returns ``(bytes, level, groups, note)`` as :func:`pick_level` does (the
    coarsest, with a note, when nothing fits)."""
    it = _item(lm, img, joint)
    size = img.width * img.height
    data, level, groups, note = pick_level(cut_files(lm, it.codes, it.header, it.extras), size, bpp, "bpp", lm)
    if search is not None and search.steps > 0 and level in searchable_levels(lm) and not note:
        found = _item(lm, img, joint, search, level, it.encoded, groups)
        searched = write_cut(lm, found.codes, found.header, found.extras, level, groups).data
        if 8 * len(searched) / size <= bpp:
            it, data = found, searched
    coloured = it.with_colour(data, level, groups)
    return (coloured if 8 * len(coloured) / size <= bpp else data), level, groups, note


@torch.no_grad()
def scored_cuts(lm: LoadedModel, img: Image.Image, joint: bool | None = None,
                search: SearchSettings | None = None, levels: list[int] | None = None,
                encoded: list[torch.Tensor] | None = None) -> list[tuple[bytes, int, int, float]]:
    """Every level and refinement of an image as its file would be written (colour
    correction included), each with the distortion of what it decodes to
    (:func:`hvqc.losses.image_distortion`, the training distortion, on the 8-bit
    image): ``(bytes, level, groups, distortion)``, finest first. With ``search``, each
    level's cuts (the level and its refinements) come from that whole level's searched
    codes (:func:`searchable_levels`; the levels above the last searchable one from its
    codes); ``levels``, a subset of those, searches only them and returns only their
    cuts. ``encoded``: the encoder's codes of the image, when an earlier call made them.
    One decode per cut. (Ranking the plain cuts and searching the best two as
    cuts instead, refinements as they decode, was 6.4 % worse in BD-rate in MS-SSIM, on
    8 BSDS500 test photos at lambda 0.9 to 20: a level's search moves which cut is best.)"""
    searching = search is not None and search.steps > 0
    every = searchable_levels(lm) if searching else [1]
    out = []
    for lv in every if levels is None else levels:
        it = _item(lm, img, joint, search if searching else None, lv, encoded)
        encoded = it.encoded                      # one encode; each level searched from it
        last = lv == every[-1]
        for data, level, groups in cut_files(lm, it.codes, it.header, it.extras, lv):
            if level == lv or last:
                data, d = it.scored(data, level, groups)
                out.append((data, level, groups, d))
    return out


SCREEN_MARGIN = 0.05       # searched: levels whose plain cost is within 5 % of the best level's ...
SCREEN_MARGIN_TOP = 0.30   # ... or, for the top (coarsest) level written, within 30 %


@torch.no_grad()
def screened_cuts(lm: LoadedModel, img: Image.Image, lam: float, joint: bool | None = None,
                  search: SearchSettings | None = None) -> list[tuple[bytes, int, int, float]]:
    """:func:`scored_cuts` for one slope ``lam``, searching only the levels that can win.

    Every searchable level is first written whole from the encoder's codes and scored
    (one decode each); a level is searched, with its refinements scored from its searched
    codes, only if that plain file's ``distortion + lam * bpp`` is within
    :data:`SCREEN_MARGIN` (relative) of the best level's, or :data:`SCREEN_MARGIN_TOP`
    for the top level (:func:`screen_levels`). Returns the plain whole levels and the
    searched levels' cuts.

    Measured with ``bench/screen.py`` (never on Kodak). The top level's file is the
    smallest (tens of bytes on a small image at a steep slope), and there its search gains
    the most over its plain file: up to 13 % on 10 BSDS500 test photos at 7 slopes of the
    ladder (0.5 to 45), up to 48 % on 20 CelebA faces (178x218 px, out of the photo
    model's domain). With one 5 % margin for every level the screen picked what searching
    every level picks in 70 of 70 photo encodes but 133 of 140 face encodes (two faces at
    slope 45 cost 23 % and 30 % more: level 2 searched, level 3 would have won). With the
    top level's margin at 20 % or more no pick on either set was worse than searching
    every level's; 30 % keeps headroom over that for 1.40 searches an encode on the
    photos (1.21 with one margin; 3 searching every level) and 1.59 on the faces."""
    every = searchable_levels(lm)
    if search is None or search.steps == 0 or len(every) == 1:
        return scored_cuts(lm, img, joint, search)
    it = _item(lm, img, joint)
    whole = []
    for data, level, _ in cut_files(lm, it.codes, it.header, it.extras, refinements=False):  # one pass
        data, d = it.scored(data, level, 0)
        whole.append((data, level, 0, d))
    chosen = screen_levels(whole, lam, img.width * img.height)
    return whole + scored_cuts(lm, img, joint, search, chosen, it.encoded)


@torch.no_grad()
def compress_image_rd(lm: LoadedModel, img: Image.Image, lam: float, joint: bool | None = None,
                      search: SearchSettings | None = None) -> tuple[bytes, int, int]:
    """The level or refinement of an image that minimises ``distortion + lam * bpp``
    (:func:`scored_cuts`: the training distortion of the decoded image, the whole
    file's rate): the codec's own trade-off, so one ``lam`` gives every image the cut
    where its rate-distortion curve has that slope, as an encoder's rate-distortion
    optimisation does. With ``search``, the levels' codes are searched for this same
    trade-off: the search's rate weight is ``lam`` (its own ``lam`` is not used), so the
    codes and the cut minimise one objective, and only the levels that can win are
    searched (:func:`screened_cuts`); where the pick is a refinement, that
    refinement is then searched as it decodes (one more search) and kept if it scores
    better (8 BSDS500 test photos, lambda 0.9 to 20: -0.4 % BD-rate in MS-SSIM, -1.5 %
    in PSNR; 5 of 40 picks were refinements). Returns ``(bytes, level, groups)``."""
    if not lam > 0:
        raise ValueError(f"lambda must be positive, got {lam}")
    if search is not None:
        search = replace(search, lam=lam)
    pixels = img.width * img.height
    cuts = screened_cuts(lm, img, lam, joint, search)
    data, level, groups = pick_rd(cuts, lam, pixels)
    if search is not None and search.steps > 0 and groups and level in searchable_levels(lm):
        it = _item(lm, img, joint, search, level, groups=groups, lowest=level)
        found, d = it.scored(write_cut(lm, it.codes, it.header, it.extras, level, groups).data, level, groups)
        data, level, groups = pick_rd(cuts + [(found, level, groups, d)], lam, pixels)
    return data, level, groups


def rd_cost(cut: tuple[bytes, int, int, float], lam: float, pixels: int) -> float:
    """``distortion + lam * bpp`` of one of :func:`scored_cuts`."""
    return cut[3] + lam * 8 * len(cut[0]) / pixels


def pick_rd(cuts: list[tuple[bytes, int, int, float]], lam: float, pixels: int) -> tuple[bytes, int, int]:
    """Of :func:`scored_cuts`, the one with the least ``distortion + lam * bpp`` (ties:
    the smaller file)."""
    data, level, groups, _ = min(cuts, key=lambda c: (rd_cost(c, lam, pixels), len(c[0])))
    return data, level, groups


def screen_levels(whole: list[tuple[bytes, int, int, float]], lam: float, pixels: int,
                  margin: float | None = None, top_margin: float | None = None) -> list[int]:
    """The levels of ``whole`` (scored whole-level cuts) whose ``distortion + lam * bpp`` is
    within ``margin`` (relative; default :data:`SCREEN_MARGIN`) of the least, or within
    ``top_margin`` (default :data:`SCREEN_MARGIN_TOP`) for the top level of ``whole``:
    those :func:`screened_cuts` searches."""
    margin = SCREEN_MARGIN if margin is None else margin
    top_margin = SCREEN_MARGIN_TOP if top_margin is None else top_margin
    costs = [rd_cost(c, lam, pixels) for c in whole]
    best, top = min(costs), max(c[1] for c in whole)
    return [c[1] for c, cost in zip(whole, costs)
            if cost <= best * (1 + (top_margin if c[1] == top else margin))]


@torch.no_grad()
def decompress_image(data: bytes, lm: LoadedModel | None = None, level: int | None = None) -> Image.Image:
    """Decode a ``.hvqc`` image file; ``level`` stops above the finest level present."""
    c = bitstream.read(data)
    h = c.header
    if h.modality != 0:
        raise bitstream.FormatError("not an image file (speech modality)")
    if h.width * h.height > MAX_IMAGE_PIXELS:     # no encoder writes these: refuse, don't allocate
        raise bitstream.FormatError(f"refusing to decode {h.width}x{h.height}: more than "
                                    f"{MAX_IMAGE_PIXELS} pixels")
    lm = model_for(h, lm)
    x = decode_levels(lm, c, level)[..., : h.height, : h.width]
    blob = c.extras.get(bitstream.COLOUR_TAG)
    if blob is not None:
        if level is None or level == h.levels[-1]:  # it describes the finest cut only
            x = colour.apply(x, blob)
        else:
            colour.parse(blob, x.shape[1])          # checked all the same
    alpha = None
    if h.mode in ("LA", "RGBA"):
        raw = c.extras.get(ALPHA_TAG)
        if raw is None:
            raise bitstream.FormatError("corrupt file: alpha plane missing")
        try:
            plane = zlib.decompress(raw)
        except zlib.error:
            raise bitstream.FormatError("corrupt file: alpha plane does not inflate") from None
        if len(plane) != h.width * h.height:
            raise bitstream.FormatError("corrupt file: alpha plane has the wrong size")
        alpha = np.frombuffer(plane, np.uint8).reshape(h.height, h.width)
    return from_tensor(x, h.mode, alpha)
