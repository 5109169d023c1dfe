"""Tests for hvqc.corpus: espeak-ng synthesis and its timings, the sentence
generator and split, corpus files, the FSDD loader and ``hvqc speech corpus``."""
import json
import random
import re

import numpy as np
import pytest

from hvqc import corpus
from hvqc.audio import read_wav
from hvqc.corpus import (AlignmentError, corpus_items, fsdd_items, generate_sentence, make_corpus,
                         split_of, synthesize, text_words)
from hvqc.data import data_root

SR = 16000
TOL = 1.5e-5          # seconds: times are rounded to 10 us


def check_alignment(u):
    """Phones tile the utterance, words sit on phone boundaries in order, labels match."""
    dur = len(u.audio) / u.sample_rate
    ph = u.phones
    assert ph[0][0] == 0.0 and ph[-1][1] <= dur + TOL and ph[-1][1] > dur - 0.01
    for a, b in zip(ph, ph[1:]):
        assert a[1] == b[0]                       # contiguous
    assert all(e > s for s, e, _ in ph)
    assert all(p and "'" not in p and "," not in p for _, _, p in ph)
    assert [w for _, _, w in u.words] == text_words(u.text)
    bounds = {s for s, _, _ in ph} | {e for _, e, _ in ph}
    prev_end = 0.0
    for s, e, w in u.words:
        assert prev_end <= s < e <= dur + TOL
        assert s in bounds and e in bounds
        inside = [p for p in ph if s <= p[0] and p[1] <= e]
        assert any(p[2] != "_" for p in inside)
        prev_end = e


def db(x):
    return 10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-12)


@pytest.fixture(scope="module")
def utt():
    return synthesize("Did you see the twelve yellow birds near the river this morning?",
                      "en-gb-x-rp+f1", 180, 55, noise_seed=7)


def test_voices_available():
    voices = corpus.available_voices()
    assert len(voices) >= 4, voices
    assert not corpus.voice_available("en-xx-nowhere")
    assert not corpus.voice_available("en-us+nosuchvariant")


def test_synthesize_audio_and_alignment(utt):
    assert utt.sample_rate == SR and utt.audio.dtype == np.float32 and utt.audio.ndim == 1
    assert 1.5 < utt.duration < 6 and 0.05 < np.abs(utt.audio).max() <= 1.0
    check_alignment(utt)
    # Timings agree with the signal: pauses are near-silent, phones are not.
    a = utt.audio
    pause = np.concatenate([a[int(s * SR):int(e * SR)] for s, e, p in utt.phones if p == "_"])
    speech = np.concatenate([a[int(s * SR):int(e * SR)] for s, e, p in utt.phones if p != "_"])
    assert db(pause) < db(speech) - 20
    assert utt.alignment()["num_samples"] == len(a)


def test_joined_words_still_get_their_own_segments():
    # espeak reads "in the" and "out of" as one word (one WORD event).
    for text in ("The old clock in the hall stopped at midnight.",
                 "The children built a tall tower out of wooden blocks."):
        u = synthesize(text, "en-us")
        check_alignment(u)


def test_every_committed_sentence_aligns():
    for i, text in enumerate(corpus.SENTENCES):
        check_alignment(synthesize(text, corpus.VOICES[i % len(corpus.VOICES)]))


def test_synthesis_is_deterministic_and_history_free():
    args = ("The lamp on the desk gives a warm yellow light.", "en+f2", 170, 60)
    a = synthesize(*args, noise_seed=3)
    synthesize("Something else entirely, with a pause.", "en-gb-scotland", 150, 40)
    b = synthesize(*args, noise_seed=3)
    assert np.array_equal(a.audio, b.audio) and a.phones == b.phones and a.words == b.words
    c = synthesize(*args, noise_seed=4)          # en+f2 is breathy: the noise seed matters
    assert not np.array_equal(a.audio, c.audio) and a.phones == c.phones


@pytest.mark.parametrize("kwargs,message", [
    (dict(text="   "), "empty text"),
    (dict(text="Hello there.", voice="xx-nowhere"), "unknown espeak-ng voice"),
    (dict(text="Hello there.", rate=20), "rate must be"),
    (dict(text="Hello there.", pitch=120), "pitch must be"),
])
def test_synthesize_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthesize(**kwargs)


def test_text_espeak_reads_differently_is_refused():
    with pytest.raises(AlignmentError):
        synthesize("I counted 12 apples.")          # digits: espeak speaks a word not in the text


def test_generator_is_deterministic_and_plain():
    a = [generate_sentence(random.Random(3)) for _ in range(3)]
    r1, r2 = random.Random(11), random.Random(11)
    s1 = [generate_sentence(r1) for _ in range(300)]
    assert s1 == [generate_sentence(r2) for _ in range(300)] and a[0] == a[1]
    assert len(set(s1)) > 280
    for s in s1:
        assert re.fullmatch(r"[A-Z][A-Za-z ,]*[.?]", s), s
        assert not re.search(r"\b[Aa] [aeiou]", s), s           # "an" before vowels
        assert 3 <= len(text_words(s)) <= 16
    vocab = {w.lower() for s in s1 for w in text_words(s)}
    assert len(vocab) > 250


def test_split_is_by_words_and_disjoint():
    assert split_of("The cat sat.") == split_of("the  cat, sat?")
    stream = corpus.corpus_sentences(0)
    sents = [next(stream) for _ in range(3000)]
    keys = [" ".join(w.lower() for w in text_words(s)) for s in sents]
    assert len(set(keys)) == len(keys)                          # no repeats within a stream
    test = {k for s, k in zip(sents, keys) if split_of(s) == "test"}
    train = {k for s, k in zip(sents, keys) if split_of(s) == "train"}
    assert not test & train and 0.08 < len(test) / len(keys) < 0.17
    other = corpus.corpus_sentences(1)                          # another seed: same rule
    for s in (next(other) for _ in range(500)):
        k = " ".join(w.lower() for w in text_words(s))
        assert (k in test) <= (split_of(s) == "test") and (k in train) <= (split_of(s) == "train")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root / "a", 4, 2, seed=5)
    make_corpus(root / "b", 4, 2, seed=5)
    make_corpus(root / "c", 4, 2, seed=6)
    return root


def files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_corpus_is_byte_identical_for_a_seed(small_corpus):
    a, b, c = (files(small_corpus / n) for n in "abc")
    assert sorted(a) == ["index.json"] + [f"{s}/{i:06d}.{e}" for s in ("test", "train")
                                          for i in range(4 if s == "train" else 2)
                                          for e in ("json", "wav")]
    assert a == b
    assert a["index.json"] != c["index.json"]


def test_corpus_files_and_reader(small_corpus):
    root = small_corpus / "a"
    index = json.loads((root / "index.json").read_text())
    assert index["sample_rate"] == SR and index["seed"] == 5 and index["rejected"] == 0
    for split, n in (("train", 4), ("test", 2)):
        items = corpus_items(root, split)
        assert len(items) == n
        for it, entry in zip(items, index[split]):
            assert split_of(it.text) == split and it.voice in corpus.VOICES
            x, sr = read_wav(it.path)
            assert sr == SR and x.shape[0] == 1
            a = json.loads(it.path.with_suffix(".json").read_text())
            assert set(a) >= {"text", "voice", "sample_rate", "words", "phones"}
            assert a["num_samples"] == x.shape[1] and entry["duration"] == round(x.shape[1] / SR, 5)
            u = corpus.Utterance(it.text, it.voice, a["rate"], a["pitch"], x[0], sr,
                                 it.words, it.phones)
            check_alignment(u)
    train = {" ".join(text_words(i.text)).lower() for i in corpus_items(root, "train")}
    test = {" ".join(text_words(i.text)).lower() for i in corpus_items(root, "test")}
    assert not train & test
    with pytest.raises(ValueError):
        corpus_items(root, "dev")
    with pytest.raises(FileNotFoundError):
        corpus_items(small_corpus, "train")


def test_fsdd_loader():
    root = data_root() / "fsdd"
    if not root.is_dir():
        pytest.skip(f"FSDD not found at {root} (set HVQC_DATA)")
    test, train = fsdd_items("test"), fsdd_items("train")
    assert len(test) + len(train) == len(fsdd_items("all")) == 3000
    assert len(test) == 300
    assert {i.digit for i in test} == set(range(10)) and len({i.speaker for i in test}) == 6
    assert not {i.path for i in test} & {i.path for i in train}
    for it in test[:1] + train[:1]:
        take = int(it.path.stem.split("_")[2])
        assert it.path.name.startswith(f"{it.digit}_{it.speaker}_") and (take < 5) == (it in test)
        x, sr = read_wav(it.path)
        assert sr == 8000 and x.shape[0] == 1 and x.shape[1] > 1000
    with pytest.raises(ValueError):
        fsdd_items("valid")


def test_fsdd_loader_on_a_fake_folder(tmp_path):
    rec = tmp_path / "recordings"
    rec.mkdir()
    for name in ("3_alice_0.wav", "3_alice_12.wav", "7_bob_4.wav", "notes.txt", "x_bob_1.wav"):
        (rec / name).write_bytes(b"")
    assert [(i.path.name, i.digit, i.speaker) for i in fsdd_items("test", tmp_path)] == \
        [("3_alice_0.wav", 3, "alice"), ("7_bob_4.wav", 7, "bob")]
    assert [i.path.name for i in fsdd_items("train", tmp_path)] == ["3_alice_12.wav"]


# ---- the command line ---------------------------------------------------------------

def test_cli_speech_corpus(cli, tmp_path):
    out = tmp_path / "corpus"
    rc, stdout, err = cli("speech", "corpus", out, "--train", "2", "--test", "1", "--seed", "3")
    assert rc == 0, err
    assert "2 train + 1 test utterances" in stdout
    assert len(corpus_items(out, "train")) == 2 and len(corpus_items(out, "test")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]      # no temporary left
    rc, _, err = cli("speech", "corpus", out, "--train", "1")
    assert rc == 1 and err.strip() == f"hvqc: error: {out} is not empty (use --force to replace it)"


@pytest.mark.parametrize("args,message", [
    (["--train", "-1"], "must be 0 or more"),
    (["--train", "0", "--test", "0"], "nothing to do"),
    (["--train", "2000000"], "at most"),
])
def test_cli_speech_corpus_bad_arguments(tmp_path, args, message):
    from typer.testing import CliRunner
    from hvqc.cli import app
    r = CliRunner().invoke(app, ["speech", "corpus", str(tmp_path / "c"), *args])
    assert r.exit_code == 1 and r.output.startswith("hvqc: error:") and message in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_cli_speech_corpus_output_checks(tmp_path):
    from typer.testing import CliRunner
    from hvqc.cli import app
    runner = CliRunner()
    (tmp_path / "file").write_text("x")
    r = runner.invoke(app, ["speech", "corpus", str(tmp_path / "file")])
    assert r.exit_code == 1 and "exists and is not a folder" in r.output
    r = runner.invoke(app, ["speech", "corpus", str(tmp_path / "no" / "c")])
    assert r.exit_code == 1 and "output folder does not exist" in r.output


def test_cli_speech_corpus_leaves_nothing_on_failure(tmp_path, monkeypatch):
    from typer.testing import CliRunner
    from hvqc.cli import app

    def failing(out_dir, n_train, n_test, seed, progress=False):
        (out_dir / "train").mkdir()
        (out_dir / "train" / "000000.wav").write_bytes(b"partial")
        raise ValueError("synthesis broke")

    monkeypatch.setattr(corpus, "make_corpus", failing)
    keep = tmp_path / "old"
    keep.mkdir()
    (keep / "mine.txt").write_text("keep me")
    runner = CliRunner()
    r = runner.invoke(app, ["speech", "corpus", str(tmp_path / "new"), "--train", "1"])
    assert r.exit_code == 1 and "hvqc: error: synthesis broke" in r.output
    r = runner.invoke(app, ["speech", "corpus", str(keep), "--train", "1", "--force"])
    assert r.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert (keep / "mine.txt").read_text() == "keep me" and len(list(keep.iterdir())) == 1
