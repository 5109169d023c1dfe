"""Linear probes: how much of a label a representation makes linearly readable.

Pure functions: arrays in, floats out. The probe is multinomial logistic regression
(L2-regularised, L-BFGS, features standardised on the training split), fitted on
one split and scored on another. Helpers turn segment alignments into per-frame
labels and per-utterance feature sequences into pooled vectors.
"""
from __future__ import annotations

import numpy as np

__all__ = ["probe_accuracy", "frame_labels", "upsample", "mean_pool", "majority_accuracy"]


def probe_accuracy(train_x, train_y, test_x, test_y, c: float = 1.0, max_iter: int = 300) -> float:
    """Accuracy on ``(test_x, test_y)`` of a linear classifier fitted on ``(train_x, train_y)``.

    Args:
        train_x, test_x: ``[n, d]`` features.
        train_y, test_y: ``[n]`` integer (or string) labels; test labels unseen in
            training count as errors.
        c: inverse L2 strength of the logistic regression.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    tx, ty = np.asarray(train_x, np.float64), np.asarray(train_y)
    vx, vy = np.asarray(test_x, np.float64), np.asarray(test_y)
    if tx.ndim != 2 or vx.ndim != 2 or tx.shape[1] != vx.shape[1]:
        raise ValueError(f"features must be [n, d] with equal d, got {tx.shape} and {vx.shape}")
    if len(tx) != len(ty) or len(vx) != len(vy) or len(vy) == 0:
        raise ValueError("features and labels differ in length, or the test split is empty")
    classes = np.unique(ty)
    if len(classes) < 2:
        return float(np.mean(vy == classes[0]))
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    scaler = StandardScaler().fit(tx)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    with warnings.catch_warnings():        # at most max_iter L-BFGS steps, converged or not
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(tx), ty)
    return float(np.mean(clf.predict(scaler.transform(vx)) == vy))


def majority_accuracy(train_y, test_y) -> float:
    """Accuracy of always answering the most frequent training label (the chance floor)."""
    vals, counts = np.unique(np.asarray(train_y), return_counts=True)
    return float(np.mean(np.asarray(test_y) == vals[np.argmax(counts)]))


def frame_labels(segments, frames: int, hop_s: float = 0.01) -> np.ndarray:
    """Label of each frame (frame ``t`` centred at ``t * hop_s`` seconds) from
    ``[(start_s, end_s, label), ...]``; ``""`` where no segment covers the frame."""
    out = np.full(frames, "", dtype=object)
    times = np.arange(frames) * hop_s
    for start, end, label in segments:
        out[(times >= start) & (times < end)] = label
    return out


def upsample(x, factor: int, frames: int) -> np.ndarray:
    """``[n, d]`` features at one vector per ``factor`` frames -> ``[frames, d]`` (each repeated)."""
    a = np.repeat(np.asarray(x), factor, axis=0)
    if len(a) < frames:
        raise ValueError(f"{len(a)} frames after upsampling, need {frames}")
    return a[:frames]


def mean_pool(x) -> np.ndarray:
    """``[n, d]`` -> ``[d]``: the mean over time."""
    return np.asarray(x, np.float64).mean(0)
