"""Normalised mutual information between discrete units and labels.

The recipe of Pasad et al. (ICASSP 2023, after Hsu et al.'s HuBERT analysis):
representations are clustered with k-means fitted on training items, held-out items
are assigned to clusters, and ``I(clusters; labels) / H(labels)`` says what fraction
of the label entropy the clusters explain (0: nothing, 1: the labels can be read off
the clusters). A VQ model's code indices are clusters for free.

The plug-in estimate of mutual information is biased upward on small samples (by
roughly ``(clusters - 1)(labels - 1) / (2 n ln 2)`` bits), so every score comes with
the same score against shuffled labels, and cluster count and item count should be
fixed across the layers being compared. Uses scikit-learn's ``MiniBatchKMeans`` and
``mutual_info_score``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["label_entropy", "normalised_mi", "kmeans_units", "MIResult", "mi_with_baseline"]


def label_entropy(labels) -> float:
    """Entropy of the empirical label distribution, in nats."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalised_mi(units, labels) -> float:
    """``I(units; labels) / H(labels)`` (plug-in estimates; 0 when the labels are constant)."""
    from sklearn.metrics import mutual_info_score
    u, lab = np.asarray(units), np.asarray(labels)
    if u.shape != lab.shape:
        raise ValueError(f"units and labels differ in shape: {u.shape} vs {lab.shape}")
    h = label_entropy(lab)
    if h <= 0:
        return 0.0
    _, u = np.unique(u, return_inverse=True)
    _, lab = np.unique(lab, return_inverse=True)
    return float(mutual_info_score(lab, u) / h)


def kmeans_units(train: np.ndarray, test: np.ndarray, clusters: int = 100, seed: int = 0) -> np.ndarray:
    """Fit MiniBatchKMeans on ``train`` ``[n, d]``; the cluster of each ``test`` item ``[m]``."""
    from sklearn.cluster import MiniBatchKMeans
    train = np.asarray(train, np.float32)
    k = min(clusters, len(train))
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=max(1024, 3 * k), n_init=3,
                         max_iter=100)
    km.fit(train)
    return km.predict(np.asarray(test, np.float32))


@dataclass
class MIResult:
    """A normalised MI beside its shuffled-label baseline.

    Attributes:
        nmi: ``I(units; labels) / H(labels)``.
        baseline: the same with the labels randomly permuted (mean over shuffles).
        baseline_std: spread of the baseline over shuffles.
        units: distinct units used by the items.
        items: items scored.
    """

    nmi: float
    baseline: float
    baseline_std: float
    units: int
    items: int


def mi_with_baseline(units, labels, shuffles: int = 5, seed: int = 0) -> MIResult:
    """:func:`normalised_mi` and its shuffled-label baseline."""
    u, lab = np.asarray(units), np.asarray(labels)
    rng = np.random.default_rng(seed)
    base = [normalised_mi(u, rng.permutation(lab)) for _ in range(shuffles)]
    return MIResult(normalised_mi(u, lab), float(np.mean(base)), float(np.std(base)),
                    int(len(np.unique(u))), int(len(lab)))
