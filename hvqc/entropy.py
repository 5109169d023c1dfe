"""Entropy coding: probabilities in, bytes out.

The model's prior emits float logits. This module turns them into integer
probability tables by a deterministic fixed-point procedure, so that encoder and
decoder derive identical tables even when the float logits differ in the last
bits (e.g. different thread counts or kernels). It then drives constriction's
range coder. The coder is a queue (FIFO): symbols are decoded in the order they
were encoded, possibly over several calls. The codec relies on this: it decodes
one group of positions, runs the prior on them, then decodes the next group from
the same stream.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

PRECISION = 16  # integer pmf rows sum to 2**PRECISION
LOGIT_STEP = 1 / 16  # logits are rounded to this grid (in nats) before use
LOGIT_RANGE = 24.0  # logits below max - LOGIT_RANGE are clamped there

_TOTAL = 1 << PRECISION
_QMIN = round(LOGIT_RANGE / LOGIT_STEP)
# Constant table: EXP_TABLE[j] = round(2**24 * exp(-j * LOGIT_STEP)). It is built
# once at import with math.exp, whose results for these few arguments are fixed
# constants; everything downstream of it is integer arithmetic.
EXP_TABLE = np.array([round(2**24 * math.exp(-j * LOGIT_STEP)) for j in range(_QMIN + 1)], dtype=np.int64)

_MODEL = constriction.stream.model.Categorical(perfect=False)
_TAIL = 1024   # the last symbols of each encode call, coded in checkpointed blocks ...
_BLOCK = 64    # ... of this many
_REACH = 3     # words a decoder reads ahead: a checkpoint this far from the end is safe


class CoderError(ValueError):
    """Bad input to the coder or a stream that does not decode (e.g. truncated/corrupt)."""


def quantize_logits(logits: np.ndarray) -> np.ndarray:
    """Rounds logits to the LOGIT_STEP grid, relative to the row max.

    The row max is subtracted in float64 before rounding, so adding a constant
    to a row leaves the result unchanged (away from grid boundaries).

    Args:
        logits: float array [N, K], finite.

    Returns:
        int32 [N, K] in [-round(LOGIT_RANGE / LOGIT_STEP), 0]; each row's max is 0.

    Raises:
        CoderError: if logits is not 2-D or not finite.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise CoderError(f"logits must be a finite 2-D array, got shape {x.shape}")
    if x.size == 0:
        return np.zeros(x.shape, dtype=np.int32)
    q = np.rint((x - x.max(axis=1, keepdims=True)) / LOGIT_STEP)
    return np.clip(q, -_QMIN, 0).astype(np.int32)


def pmf_from_logits(logits: np.ndarray) -> np.ndarray:
    """Turns float logits into integer probability tables (integer-only after quantizing).

    Weights are EXP_TABLE[-q], scaled (floor) to total 2**PRECISION - K; then 1 is
    added to every entry and the flooring remainder goes to the row's argmax
    (first index on ties).

    Args:
        logits: float array [N, K].

    Returns:
        int64 [N, K]; every row sums exactly to 2**PRECISION, every entry >= 1.

    Raises:
        CoderError: if K > 2**PRECISION // 2 or logits are not 2-D and finite.
    """
    q = quantize_logits(logits)
    n, k = q.shape
    if k > _TOTAL // 2 or k < 1:
        raise CoderError(f"alphabet size must be in [1, {_TOTAL // 2}], got {k}")
    w = EXP_TABLE[-q.astype(np.int64)]  # <= 2**24 each; products below fit in int64
    free = _TOTAL - k
    pmf = w * free // w.sum(axis=1, keepdims=True) + 1
    pmf[np.arange(n), np.argmax(q, axis=1)] += _TOTAL - pmf.sum(axis=1)
    return pmf


def cost_bits(symbols: np.ndarray, pmf: np.ndarray) -> float:
    """Returns -sum log2(pmf[i, s_i] / 2**PRECISION): the ideal code length in bits."""
    symbols, pmf = _check(symbols, pmf)
    p = pmf[np.arange(len(symbols)), symbols].astype(np.float64)
    return float(-np.sum(np.log2(p / _TOTAL)))


def _check_pmf(pmf: np.ndarray) -> np.ndarray:
    pmf = np.asarray(pmf)
    if pmf.ndim != 2 or pmf.dtype.kind not in "iu" or pmf.shape[1] < 1:
        raise CoderError(f"pmf must be an integer [N, K] array, got {pmf.dtype} {pmf.shape}")
    pmf = pmf.astype(np.int64)
    if pmf.size and (pmf.min() < 1 or np.any(pmf.sum(axis=1) != _TOTAL)):
        raise CoderError(f"pmf rows must be >= 1 and sum to 2**{PRECISION}")
    return pmf


def _check(symbols: np.ndarray, pmf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pmf = _check_pmf(pmf)
    s = np.asarray(symbols)
    if s.ndim != 1 or s.dtype.kind not in "iu" or len(s) != len(pmf):
        raise CoderError(f"symbols must be integer [{len(pmf)}], got {s.dtype} {s.shape}")
    if s.size and (s.min() < 0 or s.max() >= pmf.shape[1]):
        raise CoderError(f"symbols must lie in [0, {pmf.shape[1]})")
    return s.astype(np.int64), pmf


def _probs(pmf: np.ndarray) -> np.ndarray:
    # Exact dyadic floats: both sides hand constriction bit-identical inputs.
    # C order matters: constriction misreads other layouts (e.g. a transposed
    # [N, K] view) as a different table, which still round-trips but wastes bits.
    return np.ascontiguousarray(pmf, dtype=np.float64) / _TOTAL


class Encoder:
    """Range encoder over integer pmf tables.

    The stream is constriction's 32-bit words, big-endian, with the final word's trailing
    zero bytes dropped (:meth:`finish`): the decoder pads them back. Sealing leaves the
    final word partly free, so before trimming, the encoder moves it to the nearest value
    with up to three zero low bytes that decodes the same: it re-decodes the last symbols
    from a checkpoint (:data:`_TAIL` symbols are coded in blocks of :data:`_BLOCK`, each
    after a recorded position) that the final word cannot reach. That saves 1.3 bytes a
    stream on average (7.5 bits over -log2 p instead of 16.5) for a few small decodes.
    """

    def __init__(self) -> None:
        self._coder = constriction.stream.queue.RangeEncoder()
        # Checkpointed blocks since the last bulk encode: (position, symbols, pmf as uint16)
        self._blocks: list[tuple[tuple, np.ndarray, np.ndarray]] = []
        self._whole = True      # the blocks hold every symbol coded so far

    def encode(self, symbols: np.ndarray, pmf: np.ndarray) -> None:
        """Appends symbols [N] (ints in [0, K)) coded with pmf [N, K] from pmf_from_logits."""
        s, pmf = _check(symbols, pmf)
        if not s.size or pmf.shape[1] == 1:  # K == 1 carries no information
            return
        s = np.ascontiguousarray(s, dtype=np.int32)
        bulk = max(0, len(s) - _TAIL)
        if bulk:
            self._coder.encode(s[:bulk], _MODEL, _probs(pmf[:bulk]))
            self._blocks.clear()
            self._whole = False
        for i in range(bulk, len(s), _BLOCK):
            j = min(i + _BLOCK, len(s))
            self._blocks.append((self._coder.pos(), s[i:j], pmf[i:j].astype(np.uint16)))
            self._coder.encode(s[i:j], _MODEL, _probs(pmf[i:j]))
        words = self._coder.num_words()
        while len(self._blocks) > 1 and self._blocks[1][0][0] + _REACH <= words:
            self._blocks.pop(0)                  # the next block's checkpoint is safe already
            self._whole = False

    def finish(self) -> bytes:
        """Returns the stream: big-endian words, the final one's zero low bytes dropped."""
        words = self._coder.get_compressed().astype(np.uint32)
        if not len(words):
            return b""
        words[-1], trim = self._free_final_word(words)
        return words.astype(">u4").tobytes()[:4 * len(words) - trim]

    def _free_final_word(self, words: np.ndarray) -> tuple[int, int]:
        """The final word with the most zero low bytes (up to 3) that still decodes the
        stream's last symbols, and that number of bytes."""
        last = int(words[-1])
        # A checkpoint is safe when the final word is out of its reach, or when it is the
        # stream's start (then every symbol is re-decoded: short streams, digits' files).
        start = [k for k, (pos, _, _) in enumerate(self._blocks)
                 if pos[0] + _REACH <= len(words) or (k == 0 and self._whole)]
        for nbytes in (3, 2, 1):
            unit = 1 << (8 * nbytes)
            low = last - last % unit
            if low == last:
                return last, nbytes
            if not start:
                continue
            for cand in (low, low + unit):
                if cand < 1 << 32 and self._decodes_tail(words, cand, start[-1]):
                    return cand, nbytes
        return last, 0

    def _decodes_tail(self, words: np.ndarray, final: int, first: int) -> bool:
        trial = words.copy()
        trial[-1] = final
        dec = constriction.stream.queue.RangeDecoder(trial)
        dec.seek(*self._blocks[first][0])
        try:
            return all(np.array_equal(dec.decode(_MODEL, _probs(p)), s)
                       for _, s, p in self._blocks[first:])
        except Exception:  # noqa: BLE001 - a candidate that breaks the decoder is no candidate
            return False


class Decoder:
    """Range decoder; call decode with the same pmf sequence the encoder used.

    A range coder cannot tell where its stream ends (the encoder frees the final word's
    low bytes), so a stream cut or extended by whole words may decode without an error:
    the container's lengths and CRC32 guard the payload.
    """

    def __init__(self, data: bytes) -> None:
        data = bytes(data)
        words = np.frombuffer(data + b"\0" * (-len(data) % 4), dtype=">u4").astype(np.uint32)
        try:
            self._coder = constriction.stream.queue.RangeDecoder(words)
        except Exception as e:  # noqa: BLE001 - any constriction failure is a bad stream
            raise CoderError(f"corrupt payload: {e}") from e

    def decode(self, pmf: np.ndarray) -> np.ndarray:
        """Decodes len(pmf) symbols; returns int64 [N]."""
        pmf = _check_pmf(pmf)
        if pmf.shape[0] == 0 or pmf.shape[1] == 1:
            return np.zeros(pmf.shape[0], dtype=np.int64)
        try:
            out = self._coder.decode(_MODEL, _probs(pmf))
        except Exception as e:  # noqa: BLE001
            raise CoderError(f"corrupt payload: {e}") from e
        return np.asarray(out, dtype=np.int64)


def encode_symbols(symbols: np.ndarray, pmf: np.ndarray) -> bytes:
    """Encodes symbols [N] with pmf [N, K] in one call; returns the stream."""
    enc = Encoder()
    enc.encode(symbols, pmf)
    return enc.finish()


def decode_symbols(data: bytes, pmf: np.ndarray) -> np.ndarray:
    """Decodes len(pmf) symbols from a whole stream."""
    return Decoder(data).decode(pmf)
