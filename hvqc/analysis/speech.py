"""Speech quality measures: log-spectral distance, mel-cepstral distortion, STOI.

Pure functions of two mono waveforms (numpy arrays or tensors, ``[samples]``, the
reference first) at the same sample rate, returning floats. Signals of different
lengths are compared over the shorter one; no time alignment (DTW) is done, as a
codec's output is sample-aligned with its input. Spectra use :mod:`hvqc.audio`'s
16 kHz analysis (10 ms hop, 25 ms Hann window, 512-point FFT).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..audio import SAMPLE_RATE, log_mel, resample, stft_mag

__all__ = ["lsd", "mcd", "stoi", "spectral_convergence"]

_POWER_FLOOR = 1e-10


def _pair(ref, est, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(ref.detach().cpu() if isinstance(ref, torch.Tensor) else ref, np.float64)
    b = np.asarray(est.detach().cpu() if isinstance(est, torch.Tensor) else est, np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"expected mono [samples] signals, got shapes {a.shape} and {b.shape}")
    n = min(len(a), len(b))
    if n == 0:
        raise ValueError("empty signal")
    a, b = a[:n], b[:n]
    if sample_rate != SAMPLE_RATE:
        a, b = resample(a, sample_rate, SAMPLE_RATE), resample(b, sample_rate, SAMPLE_RATE)
    return a, b


def lsd(ref, est, sample_rate: int = SAMPLE_RATE) -> float:
    """Log-spectral distance in dB: per frame the RMS over frequency of
    ``10 log10(P_ref / P_est)`` (power spectra floored at 1e-10), averaged over frames."""
    a, b = _pair(ref, est, sample_rate)
    pa = stft_mag(torch.from_numpy(a)).pow(2).clamp_min(_POWER_FLOOR)
    pb = stft_mag(torch.from_numpy(b)).pow(2).clamp_min(_POWER_FLOOR)
    d = 10.0 * torch.log10(pa / pb)
    return float(d.pow(2).mean(0).sqrt().mean())


def _dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II ``[n, n]`` (row k: basis function k)."""
    k = np.arange(n)[:, None]
    m = np.arange(n)[None]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * k * (m + 0.5) / n)
    c[0] /= np.sqrt(2.0)
    return torch.from_numpy(c)


def mcd(ref, est, sample_rate: int = SAMPLE_RATE, n_mels: int = 80, order: int = 24) -> float:
    """Mel-cepstral distortion in dB, ``(10 / ln 10) sqrt(2 sum_k (c_k - c'_k)^2)`` over
    ``k = 1..order`` (c0, the energy, excluded), averaged over frames. The cepstra are
    the orthonormal DCT-II of the natural-log mel magnitude spectrum
    (:func:`hvqc.audio.log_mel`), so values compare between runs of this function,
    not exactly with SPTK-based MCD figures."""
    if not 1 <= order < n_mels:
        raise ValueError(f"order must be in 1..{n_mels - 1}, got {order}")
    a, b = _pair(ref, est, sample_rate)
    dct = _dct_matrix(n_mels)[1:order + 1]
    ca = dct @ log_mel(torch.from_numpy(a), n_mels).double()
    cb = dct @ log_mel(torch.from_numpy(b), n_mels).double()
    per_frame = (10.0 / math.log(10.0)) * (2.0 * (ca - cb).pow(2).sum(0)).sqrt()
    return float(per_frame.mean())


def stoi(ref, est, sample_rate: int = SAMPLE_RATE, extended: bool = False) -> float:
    """Short-time objective intelligibility (pystoi; Taal et al. 2011, or the extended
    ESTOI of Jensen and Taal 2016), about 0..1. Needs roughly 0.4 s of speech above
    the silence threshold; pystoi warns and returns about 0 otherwise."""
    from pystoi import stoi as _stoi
    a = np.asarray(ref.detach().cpu() if isinstance(ref, torch.Tensor) else ref, np.float64)
    b = np.asarray(est.detach().cpu() if isinstance(est, torch.Tensor) else est, np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"expected mono [samples] signals, got shapes {a.shape} and {b.shape}")
    n = min(len(a), len(b))
    return float(_stoi(a[:n], b[:n], sample_rate, extended=extended))


def spectral_convergence(ref_mag, est_mag) -> float:
    """``||S_ref - S_est||_F / ||S_ref||_F`` of two magnitude spectrograms of equal shape
    (0 for identical ones); the usual check of a phase reconstruction."""
    a = torch.as_tensor(ref_mag).double()
    b = torch.as_tensor(est_mag).double()
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a - b).norm() / a.norm().clamp_min(1e-300))
