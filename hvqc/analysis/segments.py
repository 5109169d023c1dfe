"""Segment pooling: per-position activations -> one vector per phone or word.

After Pasad et al.: a phone is represented by the frames covering the middle third of
its segment, a word by the frames covering the whole word, mean-pooled. A layer with
``stride`` input frames per position (input frames ``hop`` seconds apart, frame ``t``
centred at ``t * hop``) has position ``p`` centred at ``(p * stride + (stride - 1) / 2)
* hop`` (the centre of the stride-2, kernel-4 convolutions' receptive field). The
positions whose centres fall inside the span are pooled; a span too short to hold
any takes the position nearest its centre, so every segment is scored at every layer
whatever its resolution.

``keep_every=2`` keeps only every other position (the 20 ms -> 40 ms control: what a
layer would give at a coarser resolution without learning anything new).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["span", "positions", "pool", "pool_codes"]


def span(start: float, end: float, part: str = "whole") -> tuple[float, float]:
    """The part of a segment that is pooled: ``"whole"`` or ``"middle"`` (middle third)."""
    if part == "whole":
        return start, end
    if part == "middle":
        d = (end - start) / 3
        return start + d, end - d
    raise ValueError(f"part must be whole or middle, got {part!r}")


def positions(start: float, end: float, length: int, stride: int, hop: float,
              keep_every: int = 1) -> np.ndarray:
    """Indices of the positions (of ``length``) whose centres lie in ``[start, end]``; the
    nearest to the span's centre when none does. Only multiples of ``keep_every``."""
    p = np.arange(0, length, keep_every)
    centres = (p * stride + (stride - 1) / 2) * hop
    inside = p[(centres >= start - 1e-9) & (centres <= end + 1e-9)]
    if len(inside):
        return inside
    return p[[int(np.argmin(np.abs(centres - (start + end) / 2)))]]


def pool(act: np.ndarray, segments: Sequence[tuple[float, float]], stride: int, hop: float,
         part: str = "whole", keep_every: int = 1) -> np.ndarray:
    """Mean over the positions of each segment.

    Args:
        act: ``[C, T]`` activations of one utterance (``T`` positions).
        segments: ``(start_s, end_s)`` per segment.
        stride: input frames per position; hop: seconds between input frames.

    Returns:
        ``[len(segments), C]``.
    """
    act = np.asarray(act)
    out = np.empty((len(segments), act.shape[0]), np.float64)
    for i, (s, e) in enumerate(segments):
        a, b = span(s, e, part)
        out[i] = act[:, positions(a, b, act.shape[1], stride, hop, keep_every)].mean(1)
    return out


def pool_codes(codes: np.ndarray, segments: Sequence[tuple[float, float]], stride: int, hop: float,
               part: str = "whole", keep_every: int = 1) -> np.ndarray:
    """The most frequent code over the positions of each segment (ties: the smallest code).

    Args:
        codes: ``[T]`` code indices of one utterance.

    Returns:
        ``[len(segments)]`` int64.
    """
    codes = np.asarray(codes)
    out = np.empty(len(segments), np.int64)
    for i, (s, e) in enumerate(segments):
        a, b = span(s, e, part)
        vals, counts = np.unique(codes[positions(a, b, len(codes), stride, hop, keep_every)],
                                 return_counts=True)
        out[i] = vals[counts.argmax()]
    return out
