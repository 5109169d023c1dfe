"""Projection-weighted CCA (PWCCA), scored on held-out data.

The method of Pasad et al. ("Comparative layer-wise analysis of self-supervised
speech models", ICASSP 2023; "Layer-wise analysis of a self-supervised speech
representation model", ASRU 2021), which builds on SVCCA's ``cca_core`` (Raghu et
al., NeurIPS 2017) and PWCCA (Morcos et al., NeurIPS 2018):

* the covariances of the two views are each divided by their largest absolute
  entry (the cross-covariance by the geometric mean of the two), so one ``eps``
  means the same thing for views of any scale;
* dimensions whose normalised variance is below ``eps`` are dropped, and ``eps * I``
  is added to each view's covariance (ridge-regularised CCA);
* ``eps`` is chosen from a grid on a held-out part of the training folds;
* the score is the projection-weighted mean of the canonical correlations measured
  on held-out items: each canonical direction of view X is weighted by how much of
  X's (centred) dimensions it accounts for (``sum_j |<p_i, x_j>|`` over an
  orthonormal basis ``p`` of the projections), so directions that matter to the
  representation count more than incidental ones;
* 10 label-stratified folds, 3 trials with different fold assignments; the mean and
  the spread over trials are reported.

Arrays in, floats out. Views are ``[items, dims]``; labels (one per item) are only
used to stratify the folds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CCAFit", "fit_cca", "heldout_pwcca", "pwcca_cv", "PWCCAResult", "one_hot",
           "EPS_GRID"]

EPS_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class CCAFit:
    """Canonical directions fitted on training items.

    Attributes:
        mean_x, mean_y: ``[dx]``, ``[dy]`` training means.
        keep_x, keep_y: boolean masks of the dimensions kept (variance above eps).
        wx, wy: ``[kept_x, k]``, ``[kept_y, k]`` maps from the centred kept dimensions
            to the ``k = min(kept_x, kept_y)`` canonical variables.
        rho: ``[k]`` canonical correlations on the training items (regularised).
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    keep_x: np.ndarray
    keep_y: np.ndarray
    wx: np.ndarray
    wy: np.ndarray
    rho: np.ndarray

    def transform(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical variables of new items: ``([n, k], [n, k])``."""
        return ((x - self.mean_x)[:, self.keep_x] @ self.wx,
                (y - self.mean_y)[:, self.keep_y] @ self.wy)


def one_hot(labels) -> np.ndarray:
    """``[n]`` labels (any hashable values) -> ``[n, classes]`` float64 one-hot."""
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    out = np.zeros((len(inv), inv.max() + 1 if len(inv) else 0))
    out[np.arange(len(inv)), inv] = 1.0
    return out


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    w = np.clip(w, 1e-12, None)
    return (v / np.sqrt(w)) @ v.T


class _Moments:
    """Sufficient statistics (count, sums, cross-products) of a set of items, so the
    covariances of any union of folds are sums of per-fold statistics."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.n = len(x)
        self.sx, self.sy = x.sum(0), y.sum(0)
        self.xx, self.yy, self.xy = x.T @ x, y.T @ y, x.T @ y

    def __add__(self, o: "_Moments") -> "_Moments":
        m = object.__new__(_Moments)
        m.n, m.sx, m.sy = self.n + o.n, self.sx + o.sx, self.sy + o.sy
        m.xx, m.yy, m.xy = self.xx + o.xx, self.yy + o.yy, self.xy + o.xy
        return m

    def covariances(self):
        mx, my = self.sx / self.n, self.sy / self.n
        d = max(self.n - 1, 1)
        return (mx, my, (self.xx - self.n * np.outer(mx, mx)) / d,
                (self.yy - self.n * np.outer(my, my)) / d, (self.xy - self.n * np.outer(mx, my)) / d)


class _Solver:
    """CCA of one set of moments for several eps values, sharing the work per view."""

    def __init__(self, mom: _Moments):
        self.mx, self.my, sxx, syy, sxy = mom.covariances()
        self.xmax = max(np.abs(sxx).max(initial=0.0), 1e-300)
        self.ymax = max(np.abs(syy).max(initial=0.0), 1e-300)
        self.sxx, self.syy = sxx / self.xmax, syy / self.ymax
        self.sxy = sxy / np.sqrt(self.xmax * self.ymax)
        self._ix: dict = {}
        self._iy: dict = {}

    @staticmethod
    def _side(cache, c, eps):
        if eps not in cache:
            keep = np.diag(c) >= eps
            if not keep.any():
                raise ValueError("a view has no dimension with non-negligible variance")
            cache[eps] = (keep, _inv_sqrt(c[np.ix_(keep, keep)] + eps * np.eye(keep.sum())))
        return cache[eps]

    def fit(self, eps_x: float, eps_y: float) -> "CCAFit":
        kx, ix = self._side(self._ix, self.sxx, eps_x)
        ky, iy = self._side(self._iy, self.syy, eps_y)
        u, s, vt = np.linalg.svd(ix @ self.sxy[np.ix_(kx, ky)] @ iy, full_matrices=False)
        k = min(kx.sum(), ky.sum())
        # Directions in the un-normalised centred coordinates (the max scaling is a constant).
        wx = ix @ u[:, :k] / np.sqrt(self.xmax)
        wy = iy @ vt[:k].T / np.sqrt(self.ymax)
        return CCAFit(self.mx, self.my, kx, ky, wx, wy, np.clip(s[:k], 0, 1))


def fit_cca(x: np.ndarray, y: np.ndarray, eps_x: float = 1e-4, eps_y: float = 1e-4) -> CCAFit:
    """Regularised CCA of two views ``[n, dx]`` and ``[n, dy]``.

    Covariances are normalised by their max, dimensions of normalised variance below
    ``eps`` dropped, ``eps * I`` added (``cca_core``'s recipe with one eps per view).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"views must be [n, d] with the same n, got {x.shape} and {y.shape}")
    return _Solver(_Moments(x, y)).fit(eps_x, eps_y)


def _corr_cols(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return np.where(den > 0, (a * b).sum(0) / np.where(den > 0, den, 1), 0.0)


def heldout_pwcca(fit: CCAFit, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """PWCCA and mean CCA of held-out items under a fitted CCA.

    The canonical correlations are re-measured on the held-out items (so a direction
    that only fits noise scores about 0, not the optimistic training value), and
    weighted by the projection of view X's held-out dimensions onto an orthonormal
    basis of its canonical variables (Morcos et al., eq. 2).

    Returns:
        ``(pwcca, mean_cca)``.
    """
    hx, hy = fit.transform(np.asarray(x, np.float64), np.asarray(y, np.float64))
    rho = _corr_cols(hx, hy)
    xc = (x - x.mean(0))[:, fit.keep_x]
    h = hx - hx.mean(0)
    if len(h) >= h.shape[1]:
        q, _ = np.linalg.qr(h)
    else:       # fewer items than directions: no orthonormal basis of them all; unit columns
        q = h / np.maximum(np.linalg.norm(h, axis=0), 1e-300)
    w = np.abs(q.T @ xc).sum(1)
    if w.sum() <= 0:
        return 0.0, float(rho.mean()) if len(rho) else 0.0
    return float((w * rho).sum() / w.sum()), float(rho.mean())


@dataclass
class PWCCAResult:
    """Cross-validated PWCCA.

    Attributes:
        pwcca: mean over trials of the mean over held-out folds.
        std: standard deviation over trials.
        mean_cca: the same for the unweighted mean canonical correlation.
        eps: the eps chosen most often (x, y).
        trials: per-trial PWCCA.
        items: items scored.
    """

    pwcca: float
    std: float
    mean_cca: float
    eps: tuple[float, float]
    trials: list[float] = field(default_factory=list)
    items: int = 0


def _folds(n: int, strata, k: int, seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import KFold, StratifiedKFold
    idx = np.arange(n)
    if strata is not None:
        strata = np.asarray(strata)
        _, counts = np.unique(strata, return_counts=True)
        if counts.min() >= k:
            skf = StratifiedKFold(k, shuffle=True, random_state=seed)
            return [test for _, test in skf.split(idx, strata)]
    return [test for _, test in KFold(k, shuffle=True, random_state=seed).split(idx)]


def pwcca_cv(x: np.ndarray, y: np.ndarray, strata=None, folds: int = 10, trials: int = 3,
             eps_grid=EPS_GRID, seed: int = 0) -> PWCCAResult:
    """PWCCA of views ``x`` ``[n, dx]`` and ``y`` ``[n, dy]`` on held-out folds.

    For each trial, items are split into ``folds`` folds (stratified by ``strata``
    when every stratum has at least ``folds`` items). Each fold in turn is the test
    fold; the next fold is the development fold on which eps (one grid value per view,
    all pairs) is chosen after fitting on the remaining folds; the CCA is then refitted
    with that eps on all folds but the test fold and scored on the test fold.

    Args:
        x: the representation view (projection weighting is on this view).
        y: the other view (one-hot labels, log-mel features, another layer).
        strata: ``[n]`` labels to stratify the folds by (None: plain folds).
        folds, trials, eps_grid, seed: cross-validation settings.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = len(x)
    if n < 2 * folds:
        raise ValueError(f"PWCCA needs at least {2 * folds} items, got {n}")
    grid = [(ex, ey) for ex in eps_grid for ey in eps_grid]
    per_trial, means, chosen = [], [], []
    for t in range(trials):
        parts = _folds(n, strata, folds, seed + t)
        moms = [_Moments(x[p], y[p]) for p in parts]
        scores, mcs = [], []
        for i in range(folds):
            dev_i = (i + 1) % folds
            test, dev = parts[i], parts[dev_i]
            rest = [j for j in range(folds) if j not in (i, dev_i)]
            solver = _Solver(sum((moms[j] for j in rest[1:]), moms[rest[0]]))
            best, best_eps = -np.inf, grid[0]
            for ex, ey in grid:
                try:
                    s = heldout_pwcca(solver.fit(ex, ey), x[dev], y[dev])[0]
                except (ValueError, np.linalg.LinAlgError):
                    continue
                if s > best:
                    best, best_eps = s, (ex, ey)
            try:
                fit = _Solver(sum((moms[j] for j in rest), moms[dev_i])).fit(*best_eps)
                s, m = heldout_pwcca(fit, x[test], y[test])
            except (ValueError, np.linalg.LinAlgError):
                s, m = 0.0, 0.0
            scores.append(s)
            mcs.append(m)
            chosen.append(best_eps)
        per_trial.append(float(np.mean(scores)))
        means.append(float(np.mean(mcs)))
    vals, counts = np.unique(np.array(chosen), axis=0, return_counts=True)
    eps = tuple(float(v) for v in vals[counts.argmax()])
    return PWCCAResult(float(np.mean(per_trial)), float(np.std(per_trial)), float(np.mean(means)),
                       eps, per_trial, n)
