"""Tests for hvqc.audio (WAV IO, resampling, features, Griffin-Lim) and the speech
measures in hvqc.analysis.speech."""
import io
import math
import struct

import numpy as np
import pytest
import torch

from hvqc import audio
from hvqc.analysis import speech
from hvqc.audio import (HOP, N_FFT, SAMPLE_RATE, griffin_lim, log_mel, mel_filterbank, num_frames,
                        read_wav, resample, stft_mag, to_mono, write_wav)

KSDATAFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def riff(fmt_body: bytes, data: bytes, extra_chunks: bytes = b"", data_size: int | None = None,
         pad: bool = True) -> bytes:
    size = len(data) if data_size is None else data_size
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body + extra_chunks
            + b"data" + struct.pack("<I", size) + data + (b"\0" if pad and len(data) & 1 else b""))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(code: int, channels: int, rate: int, bits: int, extensible: bool = False,
              guid_tail: bytes = KSDATAFORMAT_TAIL) -> bytes:
    align = channels * bits // 8
    tag = 0xFFFE if extensible else code
    base = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    if not extensible:
        return base
    return base + struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", code) + guid_tail


# Frames [samples, channels] of exactly representable values for each format.
def encode(values: np.ndarray, code: int, bits: int) -> bytes:
    v = values.reshape(-1)
    if code == 3:
        return v.astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return (np.round(v * 128) + 128).astype(np.uint8).tobytes()
    if bits == 16:
        return np.round(v * 32768).astype("<i2").tobytes()
    if bits == 24:
        i = np.round(v * 2 ** 23).astype(np.int64) & 0xFFFFFF
        return np.stack([i & 0xFF, (i >> 8) & 0xFF, i >> 16], 1).astype(np.uint8).tobytes()
    return np.round(v * 2 ** 31).astype("<i4").tobytes()


FORMATS = [(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)]


@pytest.mark.parametrize("code,bits", FORMATS)
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("extensible", [False, True])
def test_read_wav_every_format(code, bits, channels, extensible):
    rng = np.random.default_rng(bits + channels)
    step = 2.0 ** -(bits - 1) if code == 1 else 2.0 ** -10
    frames = np.round(rng.uniform(-1, 1 - step, size=(50, channels)) / step) * step
    frames[0] = -1.0                        # the most negative code of every format
    data = riff(fmt_chunk(code, channels, 22050, bits, extensible), encode(frames, code, bits))
    x, sr = read_wav(io.BytesIO(data))
    assert sr == 22050 and x.dtype == np.float32 and x.shape == (channels, 50)
    np.testing.assert_allclose(x, frames.T.astype(np.float32), rtol=0, atol=1e-7)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_write_read_round_trip_is_exact(tmp_path, channels):
    rng = np.random.default_rng(channels)
    pcm = rng.integers(-32768, 32768, size=(channels, 1001))
    x = (pcm / 32768.0).astype(np.float32)
    p = tmp_path / "a.wav"
    write_wav(p, x, 16000)
    y, sr = read_wav(p)
    assert sr == 16000 and y.shape == (channels, 1001)
    assert np.array_equal(np.round(y * 32768).astype(int), pcm)
    buf = io.BytesIO()                       # file objects, tensors, 1-D input
    write_wav(buf, torch.from_numpy(x[0]), 8000)
    y1, sr1 = read_wav(io.BytesIO(buf.getvalue()))
    assert sr1 == 8000 and np.array_equal(y1[0], x[0])
    import wave
    with wave.open(str(p)) as w:             # a standard 16-bit PCM file
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (channels, 2, 16000)


def test_write_wav_clips_and_rejects_bad_input():
    buf = io.BytesIO()
    write_wav(buf, np.array([2.0, -2.0, 1.0, 0.5]), 16000)
    y, _ = read_wav(io.BytesIO(buf.getvalue()))
    assert np.allclose(y[0], [32767 / 32768, -1.0, 32767 / 32768, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        write_wav(io.BytesIO(), np.array([0.0, np.nan]), 16000)
    with pytest.raises(ValueError, match="shape"):
        write_wav(io.BytesIO(), np.zeros((2, 2, 2)), 16000)


def test_read_wav_tolerates_padding_and_truncation():
    frames = np.arange(-8, 8, dtype=np.float64)[:, None] / 16
    odd = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\0"          # odd chunk, padded
    data = riff(fmt_chunk(1, 1, 8000, 16), encode(frames, 1, 16), extra_chunks=odd)
    x, _ = read_wav(io.BytesIO(data))
    assert np.allclose(x[0], frames[:, 0])
    streamed = riff(fmt_chunk(1, 1, 8000, 16), encode(frames, 1, 16)[:-1], data_size=0xFFFFFFFF,
                    pad=False)
    x, _ = read_wav(io.BytesIO(streamed))                           # up to the last whole frame
    assert x.shape == (1, 15) and np.allclose(x[0], frames[:15, 0])


@pytest.mark.parametrize("data,message", [
    (b"", "not a WAV file"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a WAV file"),
    (b"RIFX" + b"\0" * 4 + b"WAVE", "unsupported WAV variant RIFX"),
    (b"RIFF\0\0\0\0WAVE", "no fmt chunk"),
    (b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0", "bad fmt chunk"),
    (riff(fmt_chunk(1, 1, 8000, 16), b"")[:-8], "no data chunk"),
    (riff(fmt_chunk(1, 1, 8000, 16), b""), "empty WAV file"),
    (riff(fmt_chunk(1, 2, 8000, 16), b"\0\0"), "empty WAV file"),
    (riff(fmt_chunk(7, 1, 8000, 8), b"\0" * 8), "mu-law"),
    (riff(fmt_chunk(2, 1, 8000, 4), b"\0" * 8), "MS ADPCM"),
    (riff(fmt_chunk(1, 1, 8000, 12), b"\0" * 8), "12-bit PCM"),
    (riff(fmt_chunk(3, 1, 8000, 16), b"\0" * 8), "16-bit float"),
    (riff(fmt_chunk(1, 0, 8000, 16), b"\0" * 8), "channels 0"),
    (riff(struct.pack("<HHIIHH", 1, 2, 8000, 32000, 2, 16), b"\0" * 8), "block align 2"),
    (riff(fmt_chunk(1, 1, 8000, 16, extensible=True, guid_tail=b"\1" * 14), b"\0" * 8),
     "WAVE_FORMAT_EXTENSIBLE"),
])
def test_read_wav_rejects_bad_files(tmp_path, data, message):
    p = tmp_path / "bad.wav"
    p.write_bytes(data)
    with pytest.raises(ValueError, match=message) as e:
        read_wav(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_read_wav_data_before_fmt():
    body = b"WAVE" + b"data" + struct.pack("<I", 4) + b"\0" * 4 + b"fmt " + struct.pack("<I", 16) \
        + fmt_chunk(1, 1, 8000, 16)
    with pytest.raises(ValueError, match="data before fmt"):
        read_wav(io.BytesIO(b"RIFF" + struct.pack("<I", len(body)) + body))


def test_read_wav_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_wav(tmp_path / "absent.wav")


def test_to_mono():
    x = np.array([[1.0, 0.0], [0.0, -1.0]], np.float32)
    assert np.array_equal(to_mono(x), [0.5, -0.5])
    row = x[0]
    assert to_mono(row) is row
    assert torch.equal(to_mono(torch.from_numpy(x)), torch.tensor([0.5, -0.5]))
    with pytest.raises(ValueError):
        to_mono(np.zeros((1, 2, 3)))


def sine(freq, rate, seconds=0.5, amp=0.8):
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


@pytest.mark.parametrize("sr_from,sr_to,freq", [
    (22050, 16000, 1000.0), (8000, 16000, 440.0), (48000, 16000, 3000.0),
    (44100, 16000, 5000.0), (16000, 22050, 2500.0), (11025, 8000, 1234.0)])
def test_resample_keeps_frequency_and_amplitude(sr_from, sr_to, freq):
    x = sine(freq, sr_from)
    y = resample(x, sr_from, sr_to)
    assert y.dtype == np.float32 and len(y) == math.ceil(len(x) * sr_to / sr_from)
    core = y[len(y) // 8: -len(y) // 8]                 # away from the zero-padded ends
    t = np.arange(len(y))[len(y) // 8: -len(y) // 8] / sr_to
    ref = 0.8 * np.sin(2 * np.pi * freq * t)
    assert np.abs(core - ref).max() < 1e-3             # same frequency, phase and amplitude
    spec = np.abs(np.fft.rfft(core * np.hanning(len(core))))
    peak = np.argmax(spec) * sr_to / len(core)
    assert abs(peak - freq) < sr_to / len(core)


def test_resample_removes_what_the_new_rate_cannot_hold():
    y = resample(sine(10000.0, 44100), 44100, 16000)   # above 8 kHz: must not alias to 6 kHz
    assert np.abs(y[1000:-1000]).max() < 1e-3 * 0.8


def test_resample_shapes_types_and_limits():
    x = np.random.default_rng(0).standard_normal((2, 3, 441)).astype(np.float32)
    y = resample(x, 44100, 16000)
    assert y.shape == (2, 3, 160)
    assert np.allclose(y[1, 2], resample(x[1, 2], 44100, 16000))
    t = resample(torch.from_numpy(x[0, 0]), 44100, 16000)
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.from_numpy(y[0, 0]))
    assert np.array_equal(resample(x, 16000, 16000), x)
    for bad in [(4000, 16000), (16000, 96000), (16000.5, 16000)]:
        with pytest.raises(ValueError, match="8000-48000"):
            resample(x, *bad)


def test_load_mono(tmp_path):
    p = tmp_path / "s.wav"
    write_wav(p, np.stack([sine(500, 8000), sine(500, 8000)]), 8000)
    y = audio.load_mono(p)
    assert y.ndim == 1 and len(y) == 8000 and abs(np.abs(y[1000:-1000]).max() - 0.8) < 2e-3


def test_stft_geometry_10ms_hop():
    n = 16000
    x = np.zeros(n, np.float32)
    x[1600] = 1.0                           # 100 ms
    m = stft_mag(x)
    assert m.shape == (N_FFT // 2 + 1, num_frames(n)) == (257, 101)
    assert int(m.sum(0).argmax()) == 1600 // HOP == 10          # frame t is centred at t * 10 ms
    assert stft_mag(torch.zeros(2, 3, 480)).shape == (2, 3, 257, 4)
    lm = audio.log_mag(x)
    assert lm.shape == m.shape and torch.isfinite(lm).all()


def test_mel_filterbank_htk():
    fb = mel_filterbank()
    assert fb.shape == (80, 257)
    assert (fb.sum(1) > 0).all() and fb.max() <= 1.0 + 1e-6
    mel = lambda f: 2595 * np.log10(1 + f / 700)       # noqa: E731
    centres = 700 * (10 ** (np.linspace(0, mel(8000), 82)[1:-1] / 2595) - 1)
    peak_bins = fb.argmax(1).numpy() * SAMPLE_RATE / N_FFT
    assert np.all(np.abs(peak_bins - centres) <= SAMPLE_RATE / N_FFT)
    with pytest.raises(ValueError):
        mel_filterbank(fmin=100, fmax=9000)
    x = sine(440, 16000)
    lm = log_mel(x)
    assert lm.shape == (80, num_frames(len(x))) and torch.isfinite(lm).all()
    assert lm.min() >= math.log(1e-5) - 1e-6


def harmonic_signal(seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * t
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 25)) * (0.5 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (0.1 * x).astype(np.float32)


def test_griffin_lim_converges_and_is_deterministic():
    x = harmonic_signal(0.6)
    mag = stft_mag(x)
    y = griffin_lim(mag, n_iter=32, seed=1, length=len(x))
    assert y.shape == (len(x),)
    sc32 = speech.spectral_convergence(mag, stft_mag(y))
    sc2 = speech.spectral_convergence(mag, stft_mag(griffin_lim(mag, n_iter=2, seed=1, length=len(x))))
    assert sc32 < 0.15 and sc32 < 0.5 * sc2
    assert torch.equal(y, griffin_lim(mag, n_iter=32, seed=1, length=len(x)))
    assert not torch.equal(y, griffin_lim(mag, n_iter=32, seed=2, length=len(x)))
    assert griffin_lim(mag, n_iter=1).shape == ((mag.shape[-1] - 1) * HOP,)
    with pytest.raises(ValueError, match="frequency bins"):
        griffin_lim(mag[:100])


def test_speech_measures():
    x = harmonic_signal(1.0)
    rng = np.random.default_rng(0)
    noisy = x + 0.01 * rng.standard_normal(len(x)).astype(np.float32)
    noisier = x + 0.05 * rng.standard_normal(len(x)).astype(np.float32)
    assert speech.lsd(x, x) == 0.0 and speech.mcd(x, x) == 0.0
    assert 0 < speech.lsd(x, noisy) < speech.lsd(x, noisier)
    assert 0 < speech.mcd(x, noisy) < speech.mcd(x, noisier)
    assert speech.lsd(torch.from_numpy(x), noisy) == pytest.approx(speech.lsd(x, noisy))
    assert speech.spectral_convergence(stft_mag(x), stft_mag(x)) == 0.0
    s_same, s_noisy = speech.stoi(x, x), speech.stoi(x, noisier)
    assert s_same == pytest.approx(1.0, abs=1e-6) and s_noisy < s_same
    x8 = resample(x, 16000, 8000)                      # other rates are analysed at 16 kHz
    assert speech.lsd(x8, x8, sample_rate=8000) == 0.0
    with pytest.raises(ValueError):
        speech.mcd(x, x, order=80)
    with pytest.raises(ValueError):
        speech.lsd(np.zeros((2, 10)), np.zeros((2, 10)))
