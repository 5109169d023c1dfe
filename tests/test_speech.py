"""The speech path with the tiny (untrained) speech model: round trips at every level,
odd inputs, the golden file, determinism and the command line's error discipline."""
from __future__ import annotations

import hashlib
import io
import struct
import warnings

import numpy as np
import pytest
import torch

from hvqc import audio, bitstream, speech, zoo
from hvqc.coding import level_shapes, padded_size, read_codes
from hvqc.hierarchy import HierarchicalVQVAE

# sha256 of the golden input (_signal(16000, 1.0)) coded by tiny-speech at level 1.
GOLDEN_SHA256 = "408ecb15e2a045ea6faa60de4e853515bb05f462039da0b084d6f6698fd3e51e"


def _signal(sr: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A vowel-like test signal: a 140 Hz pulse train through two resonances, plus noise."""
    rng = np.random.default_rng(seed)
    n = int(round(sr * seconds))
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * k * 140 * t) / k * np.exp(-((k * 140 - 700) / 400) ** 2)
            + 0.3 * np.sin(2 * np.pi * k * 140 * t) / k * np.exp(-((k * 140 - 2200) / 300) ** 2)
            for k in range(1, 40))
    x = 0.3 * x / np.abs(x).max() * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    out = np.stack([x + 0.01 * rng.standard_normal(n) for _ in range(channels)])
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def tiny_speech():
    zoo.load.cache_clear()
    lm = zoo.load("tiny-speech")
    assert lm.modality == "speech" and lm.model.num_levels == 3
    return lm


@pytest.fixture(scope="module")
def coded(tiny_speech):
    x = _signal(16000, 1.0)
    return x, {lv: speech.compress_speech(tiny_speech, x, 16000, lv) for lv in (1, 2, 3)}


def _wav_bytes(x: np.ndarray, sr: int, fmt: str = "pcm16") -> bytes:
    if fmt == "pcm16":
        buf = io.BytesIO()
        audio.write_wav(buf, x, sr)
        return buf.getvalue()
    data = np.ascontiguousarray(x.T).astype("<f4").tobytes()        # 32-bit float
    ch = x.shape[0]
    fmt_chunk = struct.pack("<HHIIHH", 3, ch, sr, sr * ch * 4, ch * 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_variants_have_equal_size_and_the_right_strides():
    sizes = {}
    for v in speech.VARIANTS:
        cfg = speech.speech_config(v)
        model = HierarchicalVQVAE(cfg)
        sizes[v] = sum(p.numel() for p in model.parameters())
        ms = [speech.frame_ms(cfg, l) for l in range(3)]
        assert ms == ([20, 20, 20] if v == "aux-only" else [20, 40, 80])
        x = torch.randn(2, 80, 16)
        with warnings.catch_warnings():
            warnings.simplefilter("error")                  # nothing printed on stderr
            assert [c.shape[-1] for c in model.encode(x)] == [160 // m for m in ms]
        out = model(x, signal_levels=True)                  # down=0 levels train and decode
        assert out.x_hat.shape == x.shape and all(h.shape == x.shape for h in out.x_hat_levels)
    assert len(set(sizes.values())) == 1, sizes


def test_round_trip_every_level(tiny_speech, coded):
    x, files = coded
    codes = tiny_speech.model.encode(
        speech._pad(speech.features(speech.prepare(x, 16000)), 8)[None])
    for lv, res in files.items():
        c = bitstream.read(res.data)
        h = c.header
        assert h.modality == 1 and h.sample_rate == 16000 and h.levels == tuple(range(3, lv - 1, -1))
        assert h.width == audio.num_frames(16000)
        got = read_codes(tiny_speech, c, len(h.levels))             # top first
        for l, idx in zip(range(2, lv - 2, -1), got):
            assert torch.equal(idx, codes[l])
        assert level_shapes(tiny_speech, padded_size(tiny_speech, h))[lv - 1] == tuple(codes[lv - 1].shape[1:])
        y, sr = speech.decompress_speech(res.data)
        assert sr == 16000 and y.shape == (16000,) and y.dtype == np.float32
        assert np.isfinite(y).all()
    assert len(files[3].data) < len(files[2].data) < len(files[1].data)
    # a split file cut to a coarser level is the file coded at that level
    assert bitstream.truncate(files[1].data, 3) == files[3].data


@pytest.mark.parametrize("sr,channels,fmt,seconds", [(8000, 1, "pcm16", 0.77), (44100, 2, "pcm16", 0.5),
                                                     (22050, 2, "float", 0.61), (48000, 1, "float", 0.013)])
def test_any_wav_decodes_to_its_rate_and_length(tiny_speech, sr, channels, fmt, seconds):
    x = _signal(sr, seconds, channels)
    wav = _wav_bytes(x, sr, fmt)
    res = speech.compress_speech_file(io.BytesIO(wav), tiny_speech, level=2)
    y, sr_out = speech.decompress_speech(res.data)
    assert sr_out == sr and y.shape == (x.shape[1],)
    # the stereo file codes as its mono downmix
    if channels == 2:
        mono = speech.compress_speech(tiny_speech, x.mean(0), sr, 2).data
        assert abs(len(mono) - len(res.data)) <= 2


def test_kbps_picks_the_finest_level_or_refinement_that_fits(tiny_speech, coded):
    x, files = coded
    rate = {lv: 8 * len(r.data) for lv, r in files.items()}          # 1 s of audio: bits/s
    res = speech.compress_speech_file((x, 16000), tiny_speech, kbps=rate[2] / 1000)
    assert res.level == 2 and res.data == files[2].data and res.note == ""
    # Between two levels: a refinement, the first of the level's two coding groups.
    res = speech.compress_speech_file((x, 16000), tiny_speech, kbps=(rate[2] - 1) / 1000)
    assert (res.level, res.groups, res.note) == (2, 1, "") and rate[3] < res.bps < rate[2]
    res = speech.compress_speech_file((x, 16000), tiny_speech, kbps=(rate[1] - 1) / 1000)
    assert (res.level, res.groups, res.note) == (1, 1, "") and res.bps > rate[2]
    y, sr = speech.decompress_speech(res.data)
    assert sr == 16000 and y.shape == x.shape[-1:]
    res = speech.compress_speech_file((x, 16000), tiny_speech, kbps=rate[3] / 2000)
    assert (res.level, res.groups) == (3, 1) and len(res.data) < len(files[3].data)
    assert "no level reaches" in res.note and "(level 3, 1 of 2 groups," in res.note


def test_golden_file(coded):
    _, files = coded
    assert hashlib.sha256(files[1].data).hexdigest() == GOLDEN_SHA256


def test_same_result_across_thread_counts(tiny_speech):
    x = _signal(16000, 0.6, seed=3)
    before = torch.get_num_threads()
    out = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            data = speech.compress_speech(tiny_speech, x, 16000, 1).data
            f, _, _ = speech.decode_features(data)
            out[n] = (data, f)
    finally:
        torch.set_num_threads(before)
    assert out[1][0] == out[2][0]
    assert torch.equal(out[1][1], out[2][1])


def test_speech_and_image_files_are_told_apart(tiny_speech, tiny, coded, photo_img):
    from hvqc import api
    _, files = coded
    with pytest.raises(bitstream.FormatError, match="not an image file"):
        api.decompress(files[1].data)
    with pytest.raises(bitstream.FormatError, match="not a speech file"):
        speech.decompress_speech(api.compress(photo_img, tiny, level=3))
    with pytest.raises(ValueError, match="not a speech model"):
        speech.compress_speech(tiny, _signal(16000, 0.1), 16000)
    with pytest.raises(ValueError, match="not an image model"):
        api.compress(photo_img, tiny_speech)
    assert api.describe(files[1].data)["seconds"] == pytest.approx(1.0)


def test_corrupt_sample_count_is_refused(coded):
    _, files = coded
    c = bitstream.read(files[3].data)
    bad = bitstream.write(bitstream.Container(c.header, c.segments, {speech.SAMPLES_TAG: struct.pack("<I", 99)}))
    with pytest.raises(bitstream.FormatError, match="do not make"):
        speech.decompress_speech(bad)


# --- command line -----------------------------------------------------------------

def _one_error_line(rc, err, *fragments):
    assert rc == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hvqc: error:"), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_cli_encode_decode_and_errors(cli, tmp_path, tiny, photo_img):
    from hvqc import api
    sr = 11025
    x = _signal(sr, 0.8, 2)
    src = tmp_path / "a.wav"
    src.write_bytes(_wav_bytes(x, sr))
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    rc, out, err = cli("speech", "encode", src, tmp_path / "bad.wav", "-o", tmp_path / "out",
                       "--model", "tiny-speech", "--level", "2")
    _one_error_line(rc, err, "bad.wav")                              # the good one is written
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.hvqc"]
    coded = tmp_path / "out" / "a.hvqc"
    rc, out, err = cli("speech", "decode", coded, "-o", tmp_path / "a_dec.wav")
    assert (rc, err) == (0, ""), err
    y, sr_out = audio.read_wav(tmp_path / "a_dec.wav")
    assert sr_out == sr and y.shape == (1, x.shape[1])
    rc, out, err = cli("speech", "decode", coded, "-o", tmp_path / "a_dec.wav")
    _one_error_line(rc, err, "exists", "--force")
    # truncated file, image file given to speech decode, speech file given to (image) decode
    (tmp_path / "cut.hvqc").write_bytes(coded.read_bytes()[:-5])
    rc, out, err = cli("speech", "decode", tmp_path / "cut.hvqc")
    _one_error_line(rc, err, "truncated")
    assert not (tmp_path / "cut.wav").exists()
    (tmp_path / "img.hvqc").write_bytes(api.compress(photo_img, tiny, level=3))
    rc, out, err = cli("speech", "decode", tmp_path / "img.hvqc")
    _one_error_line(rc, err, "not a speech file")
    rc, out, err = cli("decode", coded, "-o", tmp_path / "x.png")
    _one_error_line(rc, err, "not an image file")
    rc, out, err = cli("info", coded)
    assert rc == 0 and "11025 Hz" in out and "bits/s" in out
    assert not list(tmp_path.glob(".hvqc-*")) and not list((tmp_path / "out").glob(".hvqc-*"))


# --- the shipped model on real speech (needs the data folder) -----------------------

def test_shipped_speech_model_on_a_spoken_digit(monkeypatch):
    """The shipped ``speech`` model codes an FSDD test take at every level: the rate
    falls with the level and the decoded digit stays intelligible (STOI)."""
    from conftest import SHIPPED_WEIGHTS
    from hvqc.analysis.speech import stoi
    from hvqc.data import data_root
    folder = data_root() / "fsdd" / "recordings"
    take = folder / "7_jackson_0.wav"
    if not take.exists():
        pytest.skip(f"FSDD not in the data folder ({take} missing)")
    import json
    if "speech" not in json.loads((SHIPPED_WEIGHTS / "manifest.json").read_text())["models"]:
        pytest.skip("shipped model 'speech' not installed in weights/")
    monkeypatch.setenv("HVQC_WEIGHTS", str(SHIPPED_WEIGHTS))
    zoo.load.cache_clear()
    try:
        lm = zoo.load("speech")
        x, sr = audio.read_wav(take)
        res = speech.compress_speech(lm, x, sr, 1)
        sizes = [len(bitstream.truncate(res.data, lv)) for lv in (1, 2, 3)]
        assert sizes[0] > sizes[1] > sizes[2]
        y, sr_out = speech.decompress_speech(res.data, lm)
        assert sr_out == sr and y.shape == (x.shape[1],)
        assert stoi(x[0], y, sr) > 0.4
    finally:
        zoo.load.cache_clear()
