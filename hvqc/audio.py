"""The speech modality's signal layer: WAV IO, resampling and spectral features.

Pure numpy / torch; nothing here imports the image path.

Conventions
-----------
* Waveforms are float32 in [-1, 1], shaped ``[channels, samples]`` as read from a
  file, or ``[..., samples]`` for the features. The model works on mono 16 kHz
  (:data:`SAMPLE_RATE`).
* Features use a 10 ms hop (:data:`HOP` = 160 samples at 16 kHz) and a 25 ms Hann
  window (:data:`WIN` = 400 samples) zero-padded to a 512-point FFT (257 bins,
  31.25 Hz apart). Frames are centred: frame ``t`` is centred on sample
  ``t * HOP`` (time ``t * 10 ms``), and a signal of ``n`` samples has
  ``1 + n // HOP`` frames (:func:`num_frames`). A latent stride of 2 frames is
  therefore 20 ms, 4 frames 40 ms and 8 frames 80 ms.
* Logarithms are natural logs of *magnitudes* (not powers), floored at ``1e-5``.
"""
from __future__ import annotations

import io
import math
import struct
import wave
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch

__all__ = ["SAMPLE_RATE", "HOP", "WIN", "N_FFT", "N_MELS", "MIN_RATE", "MAX_RATE",
           "read_wav", "write_wav", "to_mono", "resample", "load_mono",
           "num_frames", "stft", "stft_mag", "log_mag", "mel_filterbank", "log_mel",
           "griffin_lim"]

SAMPLE_RATE = 16000   # the model's rate
HOP = 160             # 10 ms at 16 kHz
WIN = 400             # 25 ms Hann window ...
N_FFT = 512           # ... zero-padded to 512 points: 257 bins
N_MELS = 80
LOG_FLOOR = 1e-5
MIN_RATE, MAX_RATE = 8000, 48000   # rates :func:`resample` accepts

PathOrFile = Union[str, Path, BinaryIO]
Array = Union[np.ndarray, torch.Tensor]

# --------------------------------------------------------------------------- WAV IO

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
# The GUID tail shared by every KSDATAFORMAT_SUBTYPE_* (the first two bytes are the format code).
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_FORMAT_NAMES = {2: "MS ADPCM", 6: "A-law", 7: "mu-law", 0x11: "IMA ADPCM", 0x55: "MP3"}


def _read_bytes(src: PathOrFile) -> tuple[bytes, str]:
    if isinstance(src, (str, Path)):
        p = Path(src)
        return p.read_bytes(), str(p)
    return src.read(), getattr(src, "name", "<file>")


def read_wav(src: PathOrFile) -> tuple[np.ndarray, int]:
    """Read a RIFF/WAVE file: ``(float32 array [channels, samples], sample_rate)``.

    Supports integer PCM of 8 (unsigned), 16, 24 and 32 bits and IEEE float of 32 and
    64 bits, plain or ``WAVE_FORMAT_EXTENSIBLE``. Integers are scaled by ``2**(bits-1)``
    (so int16 ``k`` reads as ``k / 32768``); floats are returned as stored. A data chunk
    that claims more bytes than the file holds (a truncated or streamed file) is read up
    to the last whole frame.

    Raises:
        ValueError: not a WAV file, a corrupt header, an unsupported encoding, or no
            samples, each with a one-line message naming the file.
        OSError: the file cannot be read.
    """
    data, name = _read_bytes(src)
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX", b"RF64") or data[8:12] != b"WAVE":
        raise ValueError(f"not a WAV file: {name}")
    if data[:4] != b"RIFF":
        raise ValueError(f"unsupported WAV variant {data[:4].decode()}: {name}")
    fmt = None
    payload = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + size > len(data):
                raise ValueError(f"corrupt WAV file (bad fmt chunk): {name}")
            fmt = _parse_fmt(data[body:body + size], name)
        elif cid == b"data":
            if fmt is None:
                raise ValueError(f"corrupt WAV file (data before fmt chunk): {name}")
            payload = data[body:min(body + size, len(data))]
            break
        pos = body + size + (size & 1)          # chunks are padded to even sizes
    if fmt is None:
        raise ValueError(f"corrupt WAV file (no fmt chunk): {name}")
    if payload is None:
        raise ValueError(f"corrupt WAV file (no data chunk): {name}")
    code, channels, rate, bits = fmt
    frame = channels * bits // 8
    n = len(payload) // frame
    if n == 0:
        raise ValueError(f"empty WAV file (no samples): {name}")
    raw = payload[:n * frame]
    if code == _FLOAT:
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
    elif bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = (v.astype(np.float64) / float(1 << 23)).astype(np.float32)
    else:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    return np.ascontiguousarray(x.reshape(n, channels).T), rate


def _parse_fmt(b: bytes, name: str) -> tuple[int, int, int, int]:
    code, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", b, 0)
    if code == _EXTENSIBLE:
        if len(b) < 40 or b[26:40] != _GUID_TAIL:
            raise ValueError(f"corrupt WAV file (bad WAVE_FORMAT_EXTENSIBLE header): {name}")
        code = struct.unpack_from("<H", b, 24)[0]
    if code not in (_PCM, _FLOAT):
        kind = _FORMAT_NAMES.get(code, f"format code {code:#x}")
        raise ValueError(f"unsupported WAV encoding ({kind}; only PCM and float): {name}")
    ok = {_PCM: (8, 16, 24, 32), _FLOAT: (32, 64)}[code]
    if bits not in ok:
        kind = "PCM" if code == _PCM else "float"
        raise ValueError(f"unsupported WAV sample size ({bits}-bit {kind}): {name}")
    if channels < 1 or rate < 1 or align != channels * bits // 8:
        raise ValueError(f"corrupt WAV file (channels {channels}, rate {rate}, "
                         f"block align {align}): {name}")
    return code, channels, rate, bits


def write_wav(dst: PathOrFile, x: Array, sample_rate: int) -> None:
    """Write 16-bit PCM. ``x``: ``[samples]`` or ``[channels, samples]`` floats, clipped
    to [-1, 1] and scaled by 32768 (rounded), so :func:`read_wav` of an int16 file
    written back reproduces it exactly."""
    a = _numpy(x).astype(np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError("audio contains NaN or infinity")
    if int(sample_rate) != sample_rate or sample_rate < 1:
        raise ValueError(f"bad sample rate: {sample_rate}")
    pcm = np.clip(np.round(a * 32768.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(a.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(np.ascontiguousarray(pcm.T).tobytes())
    if isinstance(dst, (str, Path)):
        Path(dst).write_bytes(buf.getvalue())
    else:
        dst.write(buf.getvalue())


def to_mono(x: Array) -> Array:
    """``[channels, samples]`` -> ``[samples]`` (the channel mean); 1-D input is returned as is."""
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {tuple(x.shape)}")
    return x.mean(0) if isinstance(x, torch.Tensor) else x.mean(0, dtype=np.float64).astype(np.float32)


# --------------------------------------------------------------------------- resampling

RESAMPLE_ZEROS = 32       # zero crossings of the sinc on each side (at the lower rate)
RESAMPLE_ROLLOFF = 0.92   # cutoff as a fraction of the lower Nyquist frequency
RESAMPLE_BETA = 8.6       # Kaiser window shape: about -80 dB stop band


@lru_cache(maxsize=16)
def _resample_table(up: int, down: int) -> tuple[np.ndarray, int]:
    """Per-phase taps of the Kaiser-windowed sinc: ``[up, 2W+2]`` and ``W``.

    Output sample ``n`` sits at input position ``u = n * down / up``; with ``i = floor(u)``
    and phase ``p = n * down mod up`` it is ``sum_j x[i + j] * table[p, j + W]`` for
    ``j = -W .. W+1``.
    """
    fc = RESAMPLE_ROLLOFF * 0.5 * min(1.0, up / down)      # cycles per input sample
    half = RESAMPLE_ZEROS / (2 * fc)                        # half-length in input samples
    w = int(math.ceil(half))
    j = np.arange(-w, w + 2, dtype=np.float64)
    d = j[None, :] - np.arange(up, dtype=np.float64)[:, None] / up   # input minus output position
    r = np.clip(d / half, -1.0, 1.0)
    window = np.i0(RESAMPLE_BETA * np.sqrt(1.0 - r * r)) / np.i0(RESAMPLE_BETA)
    window[np.abs(d) > half] = 0.0
    return 2 * fc * np.sinc(2 * fc * d) * window, w


def resample(x: Array, sr_from: int, sr_to: int) -> Array:
    """Band-limited resampling of ``[..., samples]`` between integer rates in 8-48 kHz.

    A polyphase Kaiser-windowed sinc interpolator (beta 8.6, 32 zero crossings, cutoff
    0.92 x the lower of the two Nyquist frequencies, so about -80 dB of aliasing and a
    flat pass band up to about 0.85 x Nyquist). Computed in float64 with no FFT and no
    BLAS, so the result is deterministic; the signal is zero outside its ends. The
    output has ``ceil(samples * sr_to / sr_from)`` samples; sample ``n`` is at time
    ``n / sr_to``, aligned with the input's sample 0. Returns float32 (a tensor if
    given one).
    """
    for r in (sr_from, sr_to):
        if int(r) != r or not MIN_RATE <= r <= MAX_RATE:
            raise ValueError(f"sample rate {r} outside {MIN_RATE}-{MAX_RATE} Hz")
    is_tensor = isinstance(x, torch.Tensor)
    a = _numpy(x).astype(np.float64)
    if sr_from == sr_to:
        out = a.astype(np.float32)
        return torch.from_numpy(out) if is_tensor else out
    g = math.gcd(int(sr_from), int(sr_to))
    up, down = int(sr_to) // g, int(sr_from) // g
    table, w = _resample_table(up, down)
    lead = a.shape[:-1]
    a = a.reshape(-1, a.shape[-1])
    n_in = a.shape[-1]
    n_out = -(-n_in * up // down)
    padded = np.zeros((a.shape[0], n_in + 2 * w + 2), np.float64)
    padded[:, w:w + n_in] = a
    out = np.empty((a.shape[0], n_out), np.float64)
    taps = np.arange(2 * w + 2)
    block = max(1, (1 << 20) // len(taps))
    for s in range(0, n_out, block):
        n = np.arange(s, min(n_out, s + block), dtype=np.int64)
        start = (n * down) // up                # i; tap j = -W.. lands at padded[i + j + W]
        h = table[(n * down) % up]              # [B, taps]
        idx = start[:, None] + taps[None, :]
        for c in range(a.shape[0]):
            out[c, s:s + len(n)] = np.einsum("ij,ij->i", padded[c][idx], h)
    out = out.reshape(*lead, n_out).astype(np.float32)
    return torch.from_numpy(out) if is_tensor else out


def load_mono(path: PathOrFile, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a WAV file as mono float32 ``[samples]`` at ``sample_rate`` (16 kHz)."""
    x, sr = read_wav(path)
    return resample(to_mono(x), sr, sample_rate)


# --------------------------------------------------------------------------- features

def num_frames(num_samples: int, hop: int = HOP) -> int:
    """Frames of a centred STFT of ``num_samples`` samples: ``1 + num_samples // hop``."""
    return 1 + num_samples // hop


def _numpy(x: Array) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _tensor(x: Array) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t if t.is_floating_point() and t.dtype != torch.float16 else t.float()


@lru_cache(maxsize=8)
def _window(win: int) -> torch.Tensor:
    return torch.hann_window(win, periodic=True, dtype=torch.float32)


def stft(x: Array, n_fft: int = N_FFT, hop: int = HOP, win: int = WIN) -> torch.Tensor:
    """Complex centred STFT ``[..., n_fft // 2 + 1, frames]`` of ``[..., samples]``
    (Hann window of ``win`` samples, zero padding at the ends)."""
    t = _tensor(x)
    lead = t.shape[:-1]
    t = t.reshape(-1, t.shape[-1])
    s = torch.stft(t, n_fft, hop_length=hop, win_length=win, window=_window(win).to(t),
                   center=True, pad_mode="constant", return_complex=True)
    return s.reshape(*lead, *s.shape[-2:])


def stft_mag(x: Array, n_fft: int = N_FFT, hop: int = HOP, win: int = WIN) -> torch.Tensor:
    """Magnitude spectrogram ``[..., 257, frames]`` (10 ms hop, 25 ms window)."""
    return stft(x, n_fft, hop, win).abs()


def log_mag(x: Array, floor: float = LOG_FLOOR) -> torch.Tensor:
    """Log-magnitude spectrogram ``ln(max(|STFT|, floor))``, ``[..., 257, frames]``."""
    return stft_mag(x).clamp_min(floor).log()


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def _mel_fb(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> torch.Tensor:
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (freqs[None] - lo) / (mid - lo)
    fall = (hi - freqs[None]) / (hi - mid)
    fb = np.clip(np.minimum(rise, fall), 0.0, None)
    return torch.from_numpy(fb.astype(np.float32))


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                   fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]`` on the HTK mel scale
    (``mel = 2595 log10(1 + f / 700)``), centres equally spaced in mel from ``fmin`` to
    ``fmax`` (default Nyquist), each peaking at 1 (no area normalisation)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= {sample_rate / 2}, got {fmin}, {fmax}")
    return _mel_fb(n_mels, n_fft, sample_rate, float(fmin), float(fmax)).clone()


def log_mel(x: Array, n_mels: int = N_MELS, floor: float = LOG_FLOOR) -> torch.Tensor:
    """Log-mel spectrogram ``ln(max(mel_filterbank @ |STFT|, floor))``, ``[..., n_mels, frames]``,
    of a 16 kHz waveform ``[..., samples]``."""
    fb = _mel_fb(n_mels, N_FFT, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2)
    mag = stft_mag(x)
    return torch.matmul(fb.to(mag), mag).clamp_min(floor).log()


def griffin_lim(mag: Array, n_iter: int = 32, momentum: float = 0.99, seed: int = 0,
                length: int | None = None, n_fft: int = N_FFT, hop: int = HOP,
                win: int = WIN) -> torch.Tensor:
    """A waveform ``[..., samples]`` whose STFT magnitude approximates ``mag``
    (``[..., n_fft // 2 + 1, frames]``, as from :func:`stft_mag`).

    Fast Griffin-Lim (Perraudin, Balazs and Sondergaard, 2013): alternate projections
    onto consistent spectrograms (STFT of the inverse STFT) and onto the target
    magnitude, with ``momentum`` (0 gives plain Griffin-Lim). The initial phases are
    uniform random from a generator seeded with ``seed``, so the result is
    deterministic. ``length`` defaults to ``(frames - 1) * hop``.
    """
    m = _tensor(mag)
    if m.shape[-2] != n_fft // 2 + 1:
        raise ValueError(f"expected {n_fft // 2 + 1} frequency bins, got {m.shape[-2]}")
    lead = m.shape[:-2]
    m = m.reshape(-1, *m.shape[-2:])
    length = (m.shape[-1] - 1) * hop if length is None else length
    gen = torch.Generator().manual_seed(int(seed))
    phase = torch.rand(m.shape, generator=gen, dtype=m.dtype) * (2 * math.pi)
    window = _window(win).to(m)

    def istft(spec):
        return torch.istft(spec, n_fft, hop_length=hop, win_length=win, window=window,
                           center=True, length=length)

    def project(spec):           # consistent spectrogram, then the target magnitude
        c = torch.stft(istft(spec), n_fft, hop_length=hop, win_length=win, window=window,
                       center=True, pad_mode="constant", return_complex=True)
        return m * c / c.abs().clamp_min(1e-12)

    c = m * torch.polar(torch.ones_like(phase), phase)
    t = c
    for _ in range(n_iter):
        c_new = project(t)
        t = c_new + momentum * (c_new - c) if momentum else c_new
        c = c_new
    y = istft(c)
    return y.reshape(*lead, y.shape[-1])
