"""The speech codec: WAV audio <-> ``.hvqc`` files (modality 1), on top of :mod:`hvqc.coding`.

The speech path reuses the image codec's hierarchy, quantizer, priors, entropy coder
and container unchanged; it adds only the 1-D model configs, the features and the
vocoder. It never imports the image path.

Signal chain
------------
* **In**: any WAV :func:`hvqc.audio.read_wav` reads (mono or multi-channel, 8-48 kHz,
  8/16/24/32-bit PCM or float). Channels are averaged to mono and the result is
  resampled to 16 kHz (:data:`hvqc.audio.SAMPLE_RATE`) with the band-limited
  resampler of :func:`hvqc.audio.resample`; content above 8 kHz is dropped.
* **Features**: 80-band log-mel magnitudes, 10 ms hop (:func:`hvqc.audio.log_mel`,
  floored at :data:`FEATURE_FLOOR`), normalised as ``(f - FEATURE_MEAN) / FEATURE_STD``.
  ``T = 1 + n16 // 160`` frames are zero-padded (at the normalised floor) to a multiple
  of the top level's stride.
* **Levels** (model ``speech``): level 1 every 20 ms, level 2 every 40 ms, level 3
  every 80 ms, each a VQ level with a learned prior (see :func:`speech_config`).
* **Out**: features decoded from the finest level present -> mel magnitudes ->
  linear magnitudes (non-negative least squares through the mel filterbank,
  :func:`mel_to_mag`) -> Griffin-Lim phase reconstruction (:data:`GL_ITERS` fast
  iterations, fixed seed) -> resampled back to the file's original rate and cut to
  its original sample count. The output is mono 16-bit PCM.

File layout
-----------
Header ``modality = 1``, ``sample_rate`` = the input's rate, ``width`` = number of
10 ms frames ``T`` (at most 65536, about 11 minutes), ``height = 1``, ``mode "L"``;
extras tag :data:`SAMPLES_TAG` holds the original sample count (u32 little-endian).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch

from . import audio, bitstream
from .coding import CompressResult, cut_files, decode_levels, default_joint, model_for, pick_level, write_cut
from .hierarchy import HierarchyConfig, LevelSpec
from .zoo import LoadedModel

__all__ = ["VARIANTS", "speech_config", "features", "mel_to_mag", "vocode", "prepare",
           "compress_speech", "decompress_speech", "decode_features", "SpeechFile",
           "compress_speech_file", "SAMPLES_TAG", "FEATURE_MEAN", "FEATURE_STD", "FEATURE_FLOOR",
           "GL_ITERS", "MAX_FRAMES", "frame_ms"]

SAMPLES_TAG = bitstream.SPEECH_SAMPLES_TAG   # extras tag: original sample count, u32 little-endian
FEATURE_FLOOR = 1e-4      # log-mel floor (about the noise floor of 16-bit audio per band)
FEATURE_MEAN = -3.5       # feature normalisation (natural-log mel magnitudes)
FEATURE_STD = 3.0
GL_ITERS = 64             # fast Griffin-Lim iterations of the decoder
GL_SEED = 0
MAX_FRAMES = bitstream.MAX_SIDE   # the header's width: 65536 frames, 655 s
NNLS_ITERS = 30

VARIANTS = ("down+aux", "aux-only", "down-only")


def speech_config(variant: str = "down+aux") -> HierarchyConfig:
    """The speech models: 80 log-mel channels, 1-D, 3 levels of 256 codes.

    ``down+aux`` and ``down-only``: levels every 20, 40 and 80 ms (strides 2, 4, 8
    frames of 10 ms). ``aux-only``: three levels all every 20 ms (the upper two keep
    the resolution, ``down=0``). A ``down=0`` level has exactly the layers and
    parameters of a ``down=1`` one (:class:`hvqc.layers.Encoder`), so the three
    variants have the same parameter count; they differ in resolution and in the
    training losses (:mod:`hvqc.recipes`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown speech variant {variant!r} (known: {', '.join(VARIANTS)})")
    upper_down = 0 if variant == "aux-only" else 1
    levels = [LevelSpec(codes=256, dim=64, hidden=128, down=1, blocks=2, prior_hidden=96,
                        prior_blocks=2, prior_phase=2)]
    levels += [LevelSpec(codes=256, dim=64, hidden=128, down=upper_down, blocks=2, prior_hidden=96,
                         prior_blocks=2, prior_phase=2) for _ in range(2)]
    return HierarchyConfig(dims=1, channels=audio.N_MELS, levels=levels)


def frame_ms(cfg: HierarchyConfig, level: int) -> int:
    """Milliseconds between codes at ``level`` (0-based)."""
    return cfg.stride(level) * 1000 * audio.HOP // audio.SAMPLE_RATE


# --------------------------------------------------------------------------- signal

def prepare(x: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """Any waveform (``[samples]`` or ``[channels, samples]``) -> mono float32 at 16 kHz."""
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, np.float32)
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise ValueError(f"audio must be [samples] or [channels, samples] with samples, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or infinity")
    return audio.resample(audio.to_mono(x), int(sample_rate), audio.SAMPLE_RATE)


def features(x16: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Normalised log-mel features ``[80, frames]`` of a mono 16 kHz waveform."""
    t = torch.as_tensor(np.asarray(x16, np.float32) if not isinstance(x16, torch.Tensor) else x16)
    return (audio.log_mel(t.float(), floor=FEATURE_FLOOR) - FEATURE_MEAN) / FEATURE_STD


def mel_to_mag(feats: torch.Tensor, iters: int = NNLS_ITERS) -> torch.Tensor:
    """Normalised log-mel features ``[..., 80, T]`` -> linear STFT magnitudes ``[..., 257, T]``.

    The mel magnitudes are ``M = F |X|`` with the triangular filterbank ``F``; the
    magnitudes are a non-negative least-squares fit (multiplicative updates from the
    filterbank's normalised transpose), in float64.
    """
    mel = (feats.double() * FEATURE_STD + FEATURE_MEAN).exp()
    fb = audio.mel_filterbank().double()                       # [80, 257]
    fbt = fb.t()
    width = fb.sum(1).clamp_min(1e-3)                          # bins under each filter
    mag = fbt @ (mel / width[:, None])                          # spread each band over its bins
    num = fbt @ mel
    gram = fbt @ fb
    for _ in range(iters):
        mag = mag * num / (gram @ mag).clamp_min(1e-12)
    return mag.float()


def vocode(feats: torch.Tensor, length: int, iters: int = GL_ITERS) -> np.ndarray:
    """Features ``[80, T]`` -> a 16 kHz waveform of ``length`` samples (Griffin-Lim)."""
    mag = mel_to_mag(feats)
    y = audio.griffin_lim(mag, n_iter=iters, seed=GL_SEED, length=length)
    return y.numpy().astype(np.float32)


# --------------------------------------------------------------------------- codec

def _pad(feats: torch.Tensor, multiple: int) -> torch.Tensor:
    t = feats.shape[-1]
    extra = -t % multiple
    if not extra:
        return feats
    floor = (np.log(FEATURE_FLOOR) - FEATURE_MEAN) / FEATURE_STD
    return torch.cat([feats, feats.new_full((*feats.shape[:-1], extra), floor)], -1)


def _check_model(lm: LoadedModel) -> None:
    if lm.modality != "speech":
        raise ValueError(f"model {lm.name!r} is an {lm.modality} model, not a speech model")


def _item(lm: LoadedModel, x: np.ndarray | torch.Tensor, sample_rate: int, joint: bool | None):
    """A waveform's codes (every level, bottom first), the file header (levels to be
    filled in) and extras."""
    _check_model(lm)
    n_levels = lm.model.num_levels
    sr = int(sample_rate)
    if not audio.MIN_RATE <= sr <= audio.MAX_RATE:
        raise ValueError(f"sample rate {sr} Hz outside {audio.MIN_RATE}-{audio.MAX_RATE} Hz")
    n = int(np.shape(x)[-1])
    if n >= 1 << 32:
        raise ValueError("audio too long")
    x16 = prepare(x, sr)
    f = features(x16)
    frames = f.shape[-1]
    if frames > MAX_FRAMES:
        raise ValueError(f"audio too long: {frames} frames of 10 ms, at most {MAX_FRAMES} "
                         f"({MAX_FRAMES // 100} s)")
    xp = _pad(f, lm.model.config.stride(n_levels - 1))[None]
    codes = lm.model.encode(xp)
    header = bitstream.Header(model=lm.name, weights_hash=lm.hash_prefix, width=frames, height=1,
                              mode="L", num_levels=n_levels, levels=(), modality=1,
                              sample_rate=sr, joint=default_joint(lm) if joint is None else joint)
    return codes, header, {SAMPLES_TAG: struct.pack("<I", n)}


@torch.no_grad()
def compress_speech(lm: LoadedModel, x: np.ndarray | torch.Tensor, sample_rate: int,
                    level: int = 1, joint: bool | None = None) -> CompressResult:
    """Code a waveform (``[samples]`` or ``[channels, samples]`` at ``sample_rate``, 8-48 kHz)
    down to ``level`` (1 = finest, every 20 ms for ``speech``)."""
    _check_model(lm)
    n_levels = lm.model.num_levels
    if not 1 <= level <= n_levels:
        raise ValueError(f"level must be in 1..{n_levels} for model {lm.name!r}, got {level}")
    return write_cut(lm, *_item(lm, x, sample_rate, joint), level)


def _speech_container(data: bytes) -> tuple[bitstream.Container, int]:
    c = bitstream.read(data)
    h = c.header
    if h.modality != 1:
        raise bitstream.FormatError("not a speech file (image modality)")
    if h.height != 1:
        raise bitstream.FormatError(f"corrupt file: speech file with height {h.height}")
    if not audio.MIN_RATE <= h.sample_rate <= audio.MAX_RATE:
        raise bitstream.FormatError(f"corrupt file: sample rate {h.sample_rate} Hz outside "
                                    f"{audio.MIN_RATE}-{audio.MAX_RATE} Hz")
    raw = c.extras.get(SAMPLES_TAG)
    if raw is None or len(raw) != 4:
        raise bitstream.FormatError("corrupt file: sample count missing")
    (n,) = struct.unpack("<I", raw)
    n16 = -(-n * audio.SAMPLE_RATE // h.sample_rate) if n else 0
    if n == 0 or audio.num_frames(n16) != h.width:
        raise bitstream.FormatError(f"corrupt file: {n} samples at {h.sample_rate} Hz do not "
                                    f"make {h.width} frames")
    return c, n


@torch.no_grad()
def decode_features(data: bytes, lm: LoadedModel | None = None,
                    level: int | None = None) -> tuple[torch.Tensor, bitstream.Header, int]:
    """Decode a speech file to its normalised features ``[80, frames]``.

    Returns ``(features, header, original sample count)``; ``level`` stops above the
    finest level present.
    """
    c, n = _speech_container(bytes(data))
    h = c.header
    lm = model_for(h, lm)
    _check_model(lm)
    f = decode_levels(lm, c, level)[0, :, : h.width]
    return f, h, n


def decompress_speech(data: bytes, lm: LoadedModel | None = None,
                      level: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a speech file: ``(mono float32 waveform of the original length, original rate)``."""
    f, h, n = decode_features(data, lm, level)
    n16 = -(-n * audio.SAMPLE_RATE // h.sample_rate)
    y = vocode(f, n16)
    y = audio.resample(y, audio.SAMPLE_RATE, h.sample_rate)
    y = np.concatenate([y, np.zeros(max(0, n - len(y)), np.float32)])[:n]
    return np.clip(y, -1.0, 1.0).astype(np.float32), h.sample_rate


@dataclass
class SpeechFile:
    data: bytes
    level: int
    bps: float          # bits per second of the whole file
    note: str = ""
    groups: int = 0     # a refinement of ``level`` by its first coding groups (0: whole level)


def compress_speech_file(src, lm: LoadedModel, level: int | None = None,
                         kbps: float | None = None, joint: bool | None = None) -> SpeechFile:
    """Code a WAV file (path, file object or ``(waveform, rate)``) at ``level`` or at the
    finest level or refinement between levels whose whole file fits ``kbps`` (the
    coarsest, with a note, if none does)."""
    if level is not None and kbps is not None:
        raise ValueError("give level or kbps, not both")
    if isinstance(src, tuple):
        x, sr = src
    else:
        x, sr = audio.read_wav(src)
    seconds = x.shape[-1] / sr
    if kbps is None:
        lv = 1 if level is None else level
        data = compress_speech(lm, x, sr, lv, joint).data
        return SpeechFile(data, lv, 8 * len(data) / seconds)
    cuts = cut_files(lm, *_item(lm, x, sr, joint))
    cut, lv, groups, note = pick_level(cuts, 1000 * seconds, kbps, "kbps", lm)
    return SpeechFile(cut, lv, 8 * len(cut) / seconds, note, groups)
