"""Tests for hvqc.entropy: fixed-point pmf tables and the range coder."""

import numpy as np
import pytest

from hvqc.entropy import (
    EXP_TABLE,
    LOGIT_RANGE,
    LOGIT_STEP,
    PRECISION,
    CoderError,
    Decoder,
    Encoder,
    cost_bits,
    decode_symbols,
    encode_symbols,
    pmf_from_logits,
    quantize_logits,
)

TOTAL = 2**PRECISION


def _sample(rng, pmf):
    """Draws one symbol per row of an integer pmf (inverse CDF on integers)."""
    cdf = np.cumsum(pmf, axis=1)
    u = rng.integers(0, TOTAL, size=(len(pmf), 1))
    return (cdf <= u).sum(axis=1)


def _random_case(rng, n, k, scale=3.0):
    pmf = pmf_from_logits(rng.normal(size=(n, k)) * scale)
    return _sample(rng, pmf), pmf


def test_exp_table_constant():
    assert EXP_TABLE[0] == 2**24
    assert len(EXP_TABLE) == round(LOGIT_RANGE / LOGIT_STEP) + 1
    assert np.all(np.diff(EXP_TABLE) <= 0)


@pytest.mark.parametrize("k", [1, 2, 3, 256, 1024, TOTAL // 2])
def test_pmf_rows_sum_exactly(k):
    rng = np.random.default_rng(k)
    for scale in (0.0, 1.0, 10.0, 1e6):
        pmf = pmf_from_logits(rng.normal(size=(50, k)) * scale)
        assert pmf.shape == (50, k)
        assert pmf.dtype.kind in "iu"
        assert np.all(pmf.sum(axis=1) == TOTAL)
        assert pmf.min() >= 1


def test_pmf_argmax_gets_remainder_and_ties_first():
    pmf = pmf_from_logits(np.zeros((1, 3)))
    assert pmf.sum() == TOTAL and pmf[0, 0] >= pmf[0, 1] == pmf[0, 2]


def test_quantize_range_and_max():
    q = quantize_logits(np.random.default_rng(0).normal(size=(100, 64)) * 30)
    assert q.dtype == np.int32
    assert np.all(q.max(axis=1) == 0)
    assert q.min() >= -round(LOGIT_RANGE / LOGIT_STEP)


def test_pmf_invariant_to_row_constant_and_tiny_noise():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 256)) * 4
    ref = pmf_from_logits(logits)
    shift = rng.normal(size=(500, 1)) * 10
    assert np.array_equal(pmf_from_logits(logits + shift), ref)
    assert np.array_equal(pmf_from_logits(logits + 1e-9 * rng.standard_normal(logits.shape)), ref)


@pytest.mark.parametrize("k", [2, 256, 1024])
@pytest.mark.parametrize("n", [1, 1000])
def test_round_trip(k, n):
    rng = np.random.default_rng(k * 7 + n)
    s, pmf = _random_case(rng, n, k)
    data = encode_symbols(s, pmf)
    out = decode_symbols(data, pmf)
    assert out.dtype == np.int64
    assert np.array_equal(out, s)


def _round_trip_groups(groups) -> bytes:
    """Codes (symbols, pmf) groups with one encode call each, checks that one decoder
    gives them back group by group, and returns the stream."""
    enc = Encoder()
    for s, pmf in groups:
        enc.encode(s, pmf)
    data = enc.finish()
    dec = Decoder(data)
    for s, pmf in groups:
        assert np.array_equal(dec.decode(pmf), s)
    return data


def test_round_trip_in_groups():
    rng = np.random.default_rng(3)
    _round_trip_groups([_random_case(rng, n, 256) for n in (100, 1, 777)])


def test_size_close_to_cost():
    rng = np.random.default_rng(4)
    s, pmf = _random_case(rng, 20000, 256, scale=6.0)
    bits = 8 * len(encode_symbols(s, pmf))
    ideal = cost_bits(s, pmf)
    assert ideal - 8 <= bits <= ideal * 1.005 + 64   # the dropped zero bytes carry a few bits


def test_golden_stream():
    # A change here alters the bitstream: it must bump the container format version.
    i, j = np.arange(64)[:, None], np.arange(8)[None, :]
    logits = ((i * 7 + j * 13) % 17) / 4.0 - 2.0
    s = (np.arange(64) * 5) % 8
    data = encode_symbols(s, pmf_from_logits(logits))
    assert data.hex() == "02269793f848255ce47ecb0d6681882b278648ad9e6e651d5b201eee6b2063b5"


def test_empty_round_trip():
    for k in (1, 5):
        pmf = pmf_from_logits(np.zeros((0, k)))
        data = encode_symbols(np.zeros(0, dtype=np.int64), pmf)
        assert data == b""
        assert decode_symbols(data, pmf).shape == (0,)
    assert Encoder().finish() == b""


def test_single_symbol_alphabet():
    pmf = pmf_from_logits(np.zeros((10, 1)))
    assert np.all(pmf == TOTAL)
    data = encode_symbols(np.zeros(10, dtype=np.int32), pmf)
    assert np.array_equal(decode_symbols(data, pmf), np.zeros(10))


def test_bad_inputs_raise_coder_error():
    pmf = pmf_from_logits(np.zeros((4, 8)))
    s = np.array([0, 1, 2, 3])
    bad = [
        (np.array([0, 1, 2, 8]), pmf),
        (np.array([0, 1, 2, -1]), pmf),
        (s[:3], pmf),
        (s.reshape(2, 2), pmf),
        (s.astype(np.float64), pmf),
        (s, pmf.astype(np.float64)),
        (s, pmf[0]),
        (s, pmf + 1),
        (s, np.zeros_like(pmf)),
        (s, pmf[:, :0]),
    ]
    for sym, p in bad:
        with pytest.raises(CoderError):
            Encoder().encode(sym, p)
        with pytest.raises(CoderError):
            cost_bits(sym, p)
    for logits in (np.array([[0.0, np.nan]]), np.array([[np.inf, 0.0]]), np.zeros(3), np.zeros((2, TOTAL // 2 + 1))):
        with pytest.raises(CoderError):
            pmf_from_logits(logits)
    with pytest.raises(CoderError):
        Decoder(b"\x00" * 8).decode(pmf.astype(np.float32))


def test_corrupt_streams_only_raise_coder_error():
    rng = np.random.default_rng(5)
    s, pmf = _random_case(rng, 2000, 256)
    data = encode_symbols(s, pmf)
    candidates = [data[:-4], data[:-8], data[: len(data) // 2], data + b"\x01\x02\x03\x04", b""]
    candidates += [rng.integers(0, 256, size=4 * rng.integers(1, 600), dtype=np.uint8).tobytes() for _ in range(30)]
    for i in range(30):
        flipped = bytearray(data)
        flipped[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        candidates.append(bytes(flipped))
    errors = 0
    for blob in candidates:
        try:
            out = decode_symbols(blob, pmf)
            assert out.shape == s.shape and out.min() >= 0 and out.max() < 256
        except CoderError:
            errors += 1
    # A range coder cannot see where its stream ends: cut or altered streams decode to
    # other symbols (the container's CRC32 catches them), and never raise anything else.
    assert not np.array_equal(decode_symbols(data[: len(data) // 2], pmf), s)


def _stream(rng, calls):
    """Symbols and pmfs of several encode calls: (n, k, logit scale) each."""
    return [_random_case(rng, n, k, scale) for n, k, scale in calls]


def test_final_word_loses_its_free_zero_bytes():
    # The seal leaves the final word partly free; the encoder moves it to the value with
    # the most zero low bytes that still decodes, and drops them: 1.3 bytes on average.
    rng = np.random.default_rng(11)
    trimmed, over = [], []
    for _ in range(150):
        calls = [(int(rng.choice([1, 40, 900, 3000])), int(rng.choice([2, 16, 512])),
                  float(rng.choice([0.5, 3.0, 12.0]))) for _ in range(int(rng.integers(1, 4)))]
        groups = _stream(rng, calls)
        data = _round_trip_groups(groups)
        trimmed.append(-len(data) % 4)
        over.append(8 * len(data) - sum(cost_bits(s, pmf) for s, pmf in groups))
    assert np.mean(trimmed) > 1.0 and set(trimmed) == {0, 1, 2, 3}
    assert np.mean(over) < 12          # whole 32-bit words: about 16.5 bits over -log2 p


def test_trimmed_streams_decode_in_any_call_pattern():
    # Tails shorter than a block, alphabets of one symbol between calls, nearly certain
    # symbols (many per word), and a final call that adds no bits at all.
    rng = np.random.default_rng(12)
    for calls in ([(5, 2, 0.1)], [(3000, 512, 3.0), (1, 512, 3.0)], [(2000, 4, 40.0)],
                  [(700, 256, 3.0), (10, 1, 0.0), (64, 256, 3.0)], [(1500, 256, 3.0), (0, 256, 3.0)]):
        _round_trip_groups(_stream(rng, calls))


def test_short_streams_are_trimmed_from_their_start():
    # A stream shorter than the final word's reach is re-decoded whole from its start, so
    # it is trimmed too: a single 8-bit symbol costs about one byte, not a 32-bit word.
    rng = np.random.default_rng(13)
    sizes = [len(_round_trip_groups([_random_case(rng, 1, 256, scale=0.0)])) for _ in range(60)]
    assert np.mean(sizes) < 1.5 and max(sizes) <= 4
