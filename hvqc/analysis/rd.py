"""Rate-distortion curve comparison: the Bjøntegaard delta rate (BD-rate).

G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
VCEG-M33 (2001), with the piecewise cubic Hermite (PCHIP) interpolation that
later replaced the cubic polynomial fit (JCTVC-K0279, and the VCEG-AL22 update):
each curve's log-rate is interpolated as a monotone cubic of quality, the two are
integrated over the quality interval both curves cover, and the mean difference of
log-rates becomes a percentage.

Arrays in, floats out: no file, plotting or codec code here.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

__all__ = ["rd_hull", "quality_overlap", "bd_rate", "log_spaced_settings"]


def rd_hull(rate: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The usable points of an RD curve: finite, positive rate, and not dominated.

    A point is dropped when a point of lower (or equal) rate already has at least its
    quality: a codec would never choose it. What remains has strictly increasing
    quality and rate.

    Args:
        rate: rates (any positive unit, e.g. bpp), one per setting.
        quality: quality of each setting (PSNR dB, MS-SSIM dB, ...); higher is better.

    Returns:
        ``(rate, quality)`` arrays sorted by quality.
    """
    r = np.asarray(rate, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if r.shape != q.shape:
        raise ValueError(f"rate and quality differ in length: {r.size} vs {q.size}")
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.lexsort((-q, r))              # by rate, best quality first among equal rates
    keep, best = [], -np.inf
    for i in order:
        if q[i] > best:
            keep.append(i)
            best = q[i]
    return r[keep], q[keep]


def quality_overlap(quality_a: Sequence[float], quality_b: Sequence[float]) -> tuple[float, float] | None:
    """The quality interval two curves share, or None when they do not overlap."""
    qa = np.asarray(quality_a, dtype=np.float64)
    qb = np.asarray(quality_b, dtype=np.float64)
    if qa.size < 2 or qb.size < 2:
        return None
    lo, hi = max(qa.min(), qb.min()), min(qa.max(), qb.max())
    return (float(lo), float(hi)) if hi > lo else None


def bd_rate(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
            test_rate: Sequence[float], test_quality: Sequence[float]) -> float | None:
    """Bjøntegaard delta rate of a test curve against an anchor curve, in percent.

    The average rate difference at equal quality over the quality interval both
    curves cover: -50 means the test codec needs half the anchor's rate, +100 twice
    it. Dominated points are dropped first (:func:`rd_hull`), then ``log(rate)`` is
    interpolated as a PCHIP function of quality and integrated exactly.

    Args:
        anchor_rate, anchor_quality: the reference curve, one point per setting.
        test_rate, test_quality: the curve being judged.

    Returns:
        The BD-rate in percent, or None when either curve has fewer than two usable
        points or their quality ranges do not overlap (then no rate can be compared).
    """
    ra, qa = rd_hull(anchor_rate, anchor_quality)
    rt, qt = rd_hull(test_rate, test_quality)
    span = quality_overlap(qa, qt)
    if span is None:
        return None
    lo, hi = span
    ia = PchipInterpolator(qa, np.log(ra)).integrate(lo, hi)
    it = PchipInterpolator(qt, np.log(rt)).integrate(lo, hi)
    return float(100.0 * np.expm1((it - ia) / (hi - lo)))


def log_spaced_settings(settings: Sequence[float], rate: Sequence[float], count: int) -> list[float]:
    """Where a codec's rate falls evenly in log between its two ends: ``count`` settings.

    ``rate`` is the (mean) rate at each of ``settings``, a fine grid over which the rate
    never rises (a rate-distortion slope, a quantiser step). The ends are kept; each
    other returned setting is where the rate first reaches its log-spaced target,
    interpolated in log setting between the two grid points around it, so a ladder of
    them spreads a benchmark's points evenly on a log-rate axis.
    """
    s = np.asarray(settings, dtype=float)
    r = np.asarray(rate, dtype=float)
    if count < 2 or len(s) != len(r) or len(s) < 2:
        raise ValueError("need at least 2 settings, as many rates, and count >= 2")
    if np.any(s <= 0) or np.any(np.diff(s) <= 0) or np.any(r <= 0) or np.any(np.diff(r) > 0):
        raise ValueError("settings must be positive and rising, rates positive and never rising")
    out = [float(s[0])]
    for t in np.geomspace(r[0], r[-1], count)[1:-1]:
        j = max(1, int(np.argmax(r <= t)))          # first grid point at or below the target
        a, b = r[j - 1], r[j]
        w = 0.0 if a == b else (a - t) / (a - b)
        out.append(float(np.exp(np.log(s[j - 1]) + w * (np.log(s[j]) - np.log(s[j - 1])))))
    out.append(float(s[-1]))
    return out
