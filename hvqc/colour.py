"""Per-file colour correction: a smooth map of the decoded channels, fitted by the encoder.

The decoders are trained for every image, and at these rates their output misses each
image's colours in ways no fixed network can undo: a cut this coarse cannot carry them,
so the decoder returns a desaturated, shifted guess. The encoder has the original. It
fits the map that takes the decoded signal closest to the original in squared error and
sends it in the file: the encoder-fitted (Wiener) post-filter of classical codecs (VVC's
adaptive loop filter), here over colour rather than space. The map's output channel
``c`` at a pixel is ``sum_f w_f,c(pixel) * feature_f(y)``, where

- the features of the decoded channels ``y`` are ``affine`` (``y`` and 1) or
  ``quadratic`` (also every product ``y_i y_j``, ``i <= j``: a tone curve and
  cross-channel terms), and
- the weights ``w`` vary smoothly over the image: they are set at a ``g x g`` grid of
  nodes spanning it (corners included) and interpolated bilinearly in between, so a
  ``g = 1`` map is one map for the whole image and larger ``g`` follow local casts
  without seams.

The map is linear in its weights, so the least-squares fit is closed form (normal
equations, accumulated over rows of pixels). On 16 BSDS500 photos the global affine map
gave +0.77 / +0.62 / +0.58 dB at levels 1 / 2 / 3 (oracle weights), the global quadratic
one +0.95 / +0.80 / +0.76, and quadratic on a 3 x 3 grid +1.29 / +1.35 / +1.45 dB; a 3x3
spatial filter gained only +0.04 dB over the global affine map.

The encoder picks the family, the grid and the precision of each file's map, or no map,
by the codec's own trade: the map's drop in distortion (``10 x`` its drop in mean squared
error, the MSE term of :func:`hvqc.losses.msssim_mse`) against its share of the file,
weighted by the log-slope of the model's own rate-distortion curve, ``s = dD / d ln R``:
a map that adds 1 % to a file must lower the distortion by at least ``0.01 s``, what 1 %
more rate buys in the codes. That makes the test independent of the image's size and of
the level: at a coarse level, where every byte of codes buys much, a map must be worth
far more per byte than at a fine one. The slope is a model's (its manifest's
``"colour_log_slope"``; a model without one sends no maps): for ``photo``, 0.1, from its
curve on 16 BSDS500 photos (0.09 between levels 1 and 2, 0.15 between 2 and 3, with
``D = 1 - MS-SSIM + 10 MSE`` and ``R`` the whole file).

A map describes one cut (a level, or a refinement of it) of one file: the decoder applies
it only when it decodes the finest cut the file holds, and cutting a file drops it
(:data:`hvqc.bitstream.CUT_TAGS`).

Layout (the extras of tag :data:`hvqc.bitstream.COLOUR_TAG`): u8 precision ``p`` (at most
:data:`MAX_PRECISION`); u8 ``kind << 4 | g`` (kind 0 affine, 1 quadratic; ``g`` in 1 ..
:data:`MAX_GRID`); then for each node, row-major, the ``F x C`` weights less the
identity's (``F`` the features, ``C`` the channels), each ``round(w * 2**p)`` as a zigzag
LEB128 varint.
"""
from __future__ import annotations

import torch

from .bitstream import FormatError, pack_varints, read_varints

__all__ = ["fit", "apply", "parse", "features", "num_features", "KINDS", "MAX_GRID", "MAX_PRECISION"]

KINDS = ("affine", "quadratic")
MAX_GRID = 8          # nodes per side a file may hold
MAX_PRECISION = 16
GRIDS = (1, 2, 3)     # the grids the encoder tries
PRECISIONS = range(2, 12)
_LIMIT = 1 << 20      # |integers| stay below this (varints of at most 3 bytes)
_ROWS = 1 << 16       # pixels per block of the fit and of the map
_FIT_PIXELS = 1 << 16  # the fit reads every k-th row and column, k the largest keeping this many


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(z: int) -> int:
    return z >> 1 if not z & 1 else -((z + 1) >> 1)


def num_features(kind: int, c: int) -> int:
    """Features of a map of kind ``kind`` over ``c`` channels (:func:`features`)."""
    return c + 1 + (c * (c + 1) // 2 if kind else 0)


def features(y: torch.Tensor, kind: int) -> torch.Tensor:
    """``[F, *S]`` features of the channels ``y`` ``[C, *S]``: the channels, 1, and for the
    quadratic kind every product ``y_i y_j`` (``i <= j``, row-major)."""
    c = y.shape[0]
    out = [y, torch.ones_like(y[:1])]
    if kind:
        out += [y[i:i + 1] * y[j:j + 1] for i in range(c) for j in range(i, c)]
    return torch.cat(out)


def _hat(n: int, g: int, dtype) -> torch.Tensor:
    """``[n, g]`` bilinear weights of ``n`` positions onto ``g`` nodes spanning them."""
    if g == 1:
        return torch.ones(n, 1, dtype=dtype)
    t = torch.arange(n, dtype=torch.float64) * (g - 1) / max(1, n - 1)
    return (1 - (t[:, None] - torch.arange(g, dtype=torch.float64)).abs()).clamp(min=0).to(dtype)


def _identity(kind: int, c: int, g: int) -> torch.Tensor:
    """``[g * g * F, C]`` weights of the identity map at every node."""
    w = torch.zeros(num_features(kind, c), c, dtype=torch.float64)
    w[:c] = torch.eye(c, dtype=torch.float64)
    return w.repeat(g * g, 1)


def _weights(height: int, width: int, g: int, dtype, step: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilinear node weights of every ``step``-th row and column of an image:
    ``[h, g]`` and ``[w, g]`` (nodes spanning the whole image)."""
    return _hat(height, g, dtype)[::step], _hat(width, g, dtype)[::step]


def _band(v: torch.Tensor) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """The node pairs ``(a, b)``, ``b`` in ``{a, a + 1}``, of bilinear weights ``v`` ``[n, g]``
    (no other pair shares a position) and their products ``[n, pairs]``."""
    pairs = [(a, b) for a in range(v.shape[1]) for b in (a, a + 1) if b < v.shape[1]]
    a, b = zip(*pairs)
    return pairs, v[:, list(a)] * v[:, list(b)]


def _normal_equations(f: torch.Tensor, x: torch.Tensor, height: int, width: int, step: int):
    """For each grid ``g`` of :data:`GRIDS`: ``D^T D`` and ``D^T X`` of the fit's design
    ``D`` (one row per pixel: its node weights times its features ``f`` ``[F, h, w]``,
    every ``step``-th row and column of a ``height x width`` image) against ``x``
    ``[C, h, w]``. The affine fit's are sub-blocks of the quadratic's
    (:func:`_affine_part`).

    A pixel's weights are separable (row weights times column weights) and at most two
    of each are nonzero, so the sums run over each pixel's feature products once per
    pair of neighbouring columns, then once per pair of neighbouring rows, instead of
    over every pair of nodes."""
    nf, c = f.shape[0], x.shape[0]
    per = max(1, _ROWS // 4 // f.shape[-1])              # rows of about _ROWS / 4 pixels
    weights = {g: _weights(height, width, g, f.dtype, step) for g in GRIDS}
    rows = {g: _band(vh) for g, (vh, _) in weights.items()}
    cols = {g: _band(vw) for g, (_, vw) in weights.items()}
    # every grid's column weights side by side: one pass over the pixels' products
    aw = torch.cat([cols[g][1] for g in GRIDS], 1)
    vw = torch.cat([weights[g][1] for g in GRIDS], 1)
    gff = {g: 0 for g in GRIDS}
    gfx = {g: 0 for g in GRIDS}
    for r in range(0, f.shape[1], per):
        fr = f[:, r:r + per].movedim(1, 0)                                    # [h, F, w]
        ff = (fr[:, :, None] * fr[:, None]).flatten(1, 2) @ aw                # [h, F * F, column pairs]
        fx = (fr[:, :, None] * x[:, r:r + per].movedim(1, 0)[:, None]).flatten(1, 2) @ vw   # [h, F * C, columns]
        for g, ffg, fxg in zip(GRIDS, ff.split([len(cols[g][0]) for g in GRIDS], -1),
                               fx.split(list(GRIDS), -1)):
            gff[g] = gff[g] + rows[g][1][r:r + per].T @ ffg.flatten(1)    # [row pairs, F * F * column pairs]
            gfx[g] = gfx[g] + weights[g][0][r:r + per].T @ fxg.flatten(1)  # [rows, F * C * columns]
    out = {}
    for g in GRIDS:
        (ph, _), (pw, _) = rows[g], cols[g]
        k = g * g * nf
        pairs = gff[g].view(len(ph), nf, nf, len(pw))
        dtd = torch.zeros(k, k, dtype=f.dtype)
        for q, (i, i2) in enumerate(ph):
            for p, (j, j2) in enumerate(pw):
                block = pairs[q, :, :, p]
                for (a, b), (a2, b2) in {((i, j), (i2, j2)), ((i, j2), (i2, j))}:
                    n1, n2 = (a * g + b) * nf, (a2 * g + b2) * nf
                    dtd[n1:n1 + nf, n2:n2 + nf] = block
                    dtd[n2:n2 + nf, n1:n1 + nf] = block
        out[g] = dtd, gfx[g].view(g, nf, c, g).permute(0, 3, 1, 2).reshape(k, c)
    return out


def _map(y: torch.Tensor, kind: int, g: int, w: torch.Tensor) -> torch.Tensor:
    """The map of weights ``w`` ``[g * g * F, C]`` applied to ``y`` ``[C, H, W]``.

    Separably, over blocks of rows: each row's weights interpolated between the row
    nodes (``[h, F, g * C]``, one per column node), one batched product with the row's
    features, then the column nodes' outputs interpolated."""
    c, (height, width) = y.shape[0], y.shape[-2:]
    vh, vw = _weights(height, width, g, y.dtype)
    w = w.to(y.dtype).view(g, g, -1, c)                            # [row nodes, column nodes, F, C]
    per = max(1, _ROWS // width)
    out = []
    for r in range(0, height, per):
        f = features(y[:, r:r + per], kind).movedim(0, -1)         # [h, W, F]
        wr = torch.einsum("ha,abfc->hfbc", vh[r:r + per], w).flatten(2)   # [h, F, g * C]
        m = torch.bmm(f, wr).unflatten(-1, (g, c))                 # [h, W, g, C]
        out.append((vw[:, :, None] * m).sum(-2).movedim(-1, 0))
    return torch.cat(out, 1)


def _affine_part(g: int, c: int) -> torch.Tensor:
    """Indices of the affine fit's columns among the quadratic fit's."""
    f = num_features(1, c)
    return torch.tensor([k * f + i for k in range(g * g) for i in range(c + 1)])


def _encode(p: int, kind: int, g: int, ints: list[int]) -> bytes:
    return bytes([p, kind << 4 | g]) + pack_varints([_zigzag(v) for v in ints])


def fit(decoded: torch.Tensor, target: torch.Tensor, file_bits: float, log_slope: float) -> bytes | None:
    """The colour map to send with a cut, or None where none pays for its bytes: of
    every family, grid and precision, the one that minimises ``10 x MSE`` plus
    ``log_slope`` times its share of the file (its bits over ``file_bits``).

    Args:
        decoded: ``[1, C, H, W]`` what the decoder makes of the cut, cropped to the image.
        target: ``[1, C, H, W]`` the original in the model's channels, in [0, 1].
        file_bits: the size of the cut's file without the map.
        log_slope: ``dD / d ln R`` of the model's rate-distortion curve.
    """
    c, (height, width) = decoded.shape[1], decoded.shape[-2:]
    # Every step-th row and column, at least _FIT_PIXELS pixels: a fit of at most 270
    # weights needs no more. Only those are cast to float64.
    step = max(1, int((height * width / _FIT_PIXELS) ** 0.5))
    ys = decoded[0, :, ::step, ::step].double().clamp(0, 1)
    xs = target[0, :, ::step, ::step].double()
    f = features(ys, 1)                     # the quadratic's; the affine's are its first
    n, xx = xs.numel(), float((xs * xs).sum())
    best, blob = 10 * float(((ys - xs) ** 2).sum()) / n, None     # no map
    for g, (full, fx) in _normal_equations(f, xs, height, width, step).items():
        for kind in range(len(KINDS)):
            cols = torch.arange(len(full)) if kind else _affine_part(g, c)
            dtd, dtx = full[cols][:, cols], fx[cols]
            ident = _identity(kind, c, g)
            delta = torch.linalg.lstsq(dtd, dtx, driver="gelsd").solution - ident   # flat images: rank-deficient
            for p in PRECISIONS:
                q = torch.round(delta * 2**p).clamp(-_LIMIT + 1, _LIMIT - 1)
                w = ident + q / 2**p
                sse = float((w * (dtd @ w)).sum() - 2 * (w * dtx).sum()) + xx
                if 10 * sse / n >= best:                # its bytes can only add to that
                    continue
                data = _encode(p, kind, g, [int(v) for v in q.flatten().tolist()])
                extra = 8 * (len(data) + 1 + len(pack_varints([len(data)])))   # tag and length too
                cost = 10 * sse / n + log_slope * extra / file_bits
                if cost < best:
                    best, blob = cost, data
    return blob


def parse(blob: bytes, channels: int) -> tuple[int, int, torch.Tensor]:
    """``(kind, g, weights [g * g * F, C])`` float64 from a file's blob; FormatError if
    it is malformed."""
    if len(blob) < 2 or blob[0] > MAX_PRECISION or blob[1] >> 4 >= len(KINDS) \
            or not 1 <= blob[1] & 15 <= MAX_GRID:
        raise FormatError("corrupt file: bad colour correction")
    p, kind, g = blob[0], blob[1] >> 4, blob[1] & 15
    count = g * g * num_features(kind, channels) * channels
    try:
        ints = [_unzigzag(z) for z in read_varints(blob[2:], count)]
    except FormatError:
        raise FormatError("corrupt file: bad colour correction") from None
    if any(abs(v) >= _LIMIT for v in ints):
        raise FormatError("corrupt file: colour correction out of range")
    w = torch.tensor(ints, dtype=torch.float64).view(-1, channels) / 2**p
    return kind, g, w + _identity(kind, channels, g)


def apply(decoded: torch.Tensor, blob: bytes) -> torch.Tensor:
    """The map of ``blob`` applied to ``decoded`` ``[1, C, H, W]`` (clamped to [0, 1]
    first, as the fit saw it); the caller clamps the result."""
    kind, g, w = parse(blob, decoded.shape[1])
    return _map(decoded[0].clamp(0, 1), kind, g, w)[None]
