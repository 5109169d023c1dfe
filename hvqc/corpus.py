"""Speech corpora with exact timings: espeak-ng synthesis, sentences, FSDD.

Synthesis runs the espeak-ng library bundled by the ``espeakng_loader`` package
through ctypes, in its synchronous mode, at its own rate (22050 Hz), with phoneme
events enabled; the audio is resampled to 16 kHz. Every WORD and PHONEME event
carries its exact position in the output (the event's ``sample`` field, a sample
index from the start of the utterance), which gives phone and word segments:

* phones cover the utterance without gaps: each phone runs from its event to the
  next phone event, or to an earlier WORD/END event (espeak places word events
  before the pause in front of a word, phone events after it); stretches not covered
  by a phone are pauses, labelled ``_``. Labels are espeak's phoneme mnemonics
  (e.g. ``aI``, ``@2``, ``dZ``) without the stress marks ``'`` and ``,``; espeak's
  own pause phonemes (``_:``, ``_!``, ...) become ``_``. espeak sometimes emits two
  phoneme events at the same sample (e.g. ``l`` and ``v`` of "twelve"); the first
  then has no duration and is left out.
* a word runs from the start of its first phone to the end of its last one; its
  label is the word as written in the text (from the event's character offset).
  espeak speaks some pairs ("in the", "out of") as one word with one WORD event;
  their phones are then shared out as described in :func:`_synth_aligned`.

espeak-ng keeps state in function-level statics (pitch flutter phase, gain
control, ...) that no API call resets, so an utterance would depend on what was
synthesized before it. Here the library is loaded afresh for every utterance
(``dlopen``/``dlclose``), and espeak's noise generator (used by breathy and Klatt
variants; seeded from the clock by default) and the C library's ``rand()`` are
seeded per utterance, so :func:`synthesize` is a pure function of its arguments.

Text ships with the code: :func:`generate_sentence` (a small grammar over a few
hundred common words) and :data:`SENTENCES` (simple sentences written for this
project). The train/test split of a sentence is a function of its words alone
(:func:`split_of`), so a test sentence never appears in any training set.
"""
from __future__ import annotations

import _ctypes
import bisect
import ctypes
import hashlib
import json
import random
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .audio import SAMPLE_RATE, resample, write_wav
from .data import require

__all__ = ["VOICES", "Utterance", "AlignmentError", "synthesize", "voice_available",
           "available_voices", "text_words", "normalise_text", "generate_sentence",
           "SENTENCES", "split_of", "corpus_sentences", "make_corpus", "CorpusItem",
           "corpus_items", "FsddItem", "fsdd_items"]

# --------------------------------------------------------------------------- espeak-ng

# From espeak-ng's speak_lib.h (API revision 12).
AUDIO_OUTPUT_SYNCHRONOUS = 2
espeakINITIALIZE_PHONEME_EVENTS = 0x0001
espeakINITIALIZE_DONT_EXIT = 0x8000
espeakCHARS_UTF8 = 1
POS_CHARACTER = 1
espeakRATE, espeakPITCH = 1, 3
EE_OK = 0
EV_LIST_TERMINATED, EV_WORD, EV_SENTENCE, EV_END, EV_PHONEME = 0, 1, 2, 5, 7

RATE_RANGE = (80, 450)      # espeakRATE, words per minute
PITCH_RANGE = (0, 99)       # espeakPITCH, 50 = the voice's normal pitch
MAX_TEXT = 2000             # characters per utterance


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int),          # WORD, SENTENCE
                ("name", ctypes.c_char_p),         # MARK, PLAY
                ("string", ctypes.c_char * 8)]     # PHONEME mnemonic, NUL-terminated unless 8 bytes


class _Event(ctypes.Structure):
    """``espeak_EVENT``."""
    _fields_ = [("type", ctypes.c_int),
                ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int),   # characters from the start of the text, 1-based
                ("length", ctypes.c_int),          # word length in characters (WORD)
                ("audio_position", ctypes.c_int),  # milliseconds
                ("sample", ctypes.c_int),          # sample index in the output
                ("user_data", ctypes.c_void_p),
                ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError:
        raise OSError("espeak-ng is not available: install the espeakng-loader package") from None
    lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    if not Path(lib).exists():
        raise OSError(f"espeak-ng library missing from espeakng-loader: {lib}")
    return lib, data


@lru_cache(maxsize=1)
def _srand():
    try:
        return ctypes.CDLL(None).srand
    except (OSError, AttributeError):     # no C library handle: breath noise is then unseeded
        return None


def _bind(lib) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint),
                                 ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    if hasattr(lib, "espeak_ng_SetRandSeed"):       # espeak-ng >= 1.52
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None


def _espeak(text: str, voice: str, rate: int, pitch: int, noise_seed: int):
    """Run espeak-ng on one utterance in a freshly loaded library.

    Returns ``(int16 samples, sample_rate, events)``; each event is
    ``(type, text_position, length, sample, phoneme_mnemonic_or_number)``.
    """
    lib_path, data_path = _paths()
    chunks: list[bytes] = []
    events: list[tuple] = []

    def on_audio(wav, n, ev):
        if wav and n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while ev[i].type != EV_LIST_TERMINATED:
            e = ev[i]
            if e.type == EV_PHONEME:
                payload = e.id.string.decode("utf-8", "replace")
            else:
                payload = e.id.number
            events.append((e.type, e.text_position, e.length, e.sample, payload))
            i += 1
        return 0

    callback = _CALLBACK(on_audio)
    buf = text.encode("utf-8") + b"\0"
    with _LOCK:
        lib = ctypes.CDLL(lib_path)
        try:
            _bind(lib)
            sr = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(),
                                       espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_DONT_EXIT)
            if sr <= 0:
                raise OSError(f"espeak-ng failed to initialise (data folder {data_path})")
            try:
                lib.espeak_SetSynthCallback(callback)
                if lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
                    raise ValueError(f"unknown espeak-ng voice: {voice}")
                lib.espeak_SetParameter(espeakRATE, int(rate), 0)
                lib.espeak_SetParameter(espeakPITCH, int(pitch), 0)
                # Noise (breath, Klatt voices) comes from espeak's own generator, seeded
                # from the clock at initialisation, and in places from the C rand().
                if hasattr(lib, "espeak_ng_SetRandSeed"):
                    lib.espeak_ng_SetRandSeed(noise_seed)
                srand = _srand()
                if srand is not None:
                    srand(ctypes.c_uint(noise_seed & 0xFFFFFFFF))
                rc = lib.espeak_Synth(buf, len(buf), 0, POS_CHARACTER, 0, espeakCHARS_UTF8, None, None)
                if rc != EE_OK:
                    raise OSError(f"espeak-ng synthesis failed (error {rc})")
            finally:
                lib.espeak_Terminate()
        finally:
            handle = lib._handle
            del lib
            (getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary"))(handle)
    pcm = np.frombuffer(b"".join(chunks), "<i2").copy()
    return pcm, sr, events


@lru_cache(maxsize=1)
def _voice_files() -> tuple[frozenset, frozenset]:
    data = Path(_paths()[1])
    langs = frozenset(p.name.lower() for p in (data / "lang").rglob("*") if p.is_file())
    variants = frozenset(p.name.lower() for p in (data / "voices" / "!v").glob("*") if p.is_file())
    return langs, variants


def voice_available(voice: str) -> bool:
    """Whether the bundled data has this language (and variant, after ``+``).
    (``espeak_SetVoiceByName`` accepts any variant name, silently ignoring unknown ones.)"""
    langs, variants = _voice_files()
    lang, _, variant = voice.lower().partition("+")
    return lang in langs and (not variant or variant in variants)


# Four English accents, each with a male and a female variant.
VOICES = ("en-us", "en-us+f3", "en+m3", "en+f2", "en-gb-scotland", "en-gb-scotland+f4",
          "en-gb-x-rp+m2", "en-gb-x-rp+f1")


def available_voices() -> list[str]:
    """The entries of :data:`VOICES` present in the bundled espeak-ng data."""
    return [v for v in VOICES if voice_available(v)]


# --------------------------------------------------------------------------- alignment

class AlignmentError(ValueError):
    """espeak's events do not match the text's words (the utterance is not usable)."""


_WORD = re.compile(r"[A-Za-z]+")


def normalise_text(text: str) -> str:
    """Collapse whitespace; refuse empty or overlong text."""
    t = " ".join(text.split())
    if not t:
        raise ValueError("empty text")
    if len(t) > MAX_TEXT:
        raise ValueError(f"text longer than {MAX_TEXT} characters")
    return t


def text_words(text: str) -> list[str]:
    """The words of ``text`` as espeak reports them: maximal runs of ASCII letters."""
    return _WORD.findall(text)


def _phone_label(mnemonic: str) -> str:
    m = mnemonic.lstrip("',")
    return "_" if m.startswith("_") or not m else m


def _phone_segments(events: list[tuple], n: int) -> tuple[dict, list[tuple[int, int, str]]]:
    """Phone segments in samples: ``{event index: (start, end, label)}`` for the phone
    events with a duration, and the gap-free list with pauses filled in."""
    phone_ev = [i for i, e in enumerate(events) if e[0] == EV_PHONEME]
    breaks = sorted({min(max(e[3], 0), n) for e in events if e[0] in (EV_WORD, EV_END)} | {n})
    seg = {}
    for k, i in enumerate(phone_ev):
        s = min(max(events[i][3], 0), n)
        e = breaks[bisect.bisect_right(breaks, s)] if s < n else n
        if k + 1 < len(phone_ev):
            e = min(e, min(max(events[phone_ev[k + 1]][3], 0), n))
        if e > s:
            seg[i] = (s, e, _phone_label(events[i][4]))
    phones: list[list] = []
    cursor = 0
    for s, e, lab in sorted(seg.values()):
        if s > cursor:
            phones.append([cursor, s, "_"])
        if phones and lab == "_" == phones[-1][2]:
            phones[-1][1] = e
        else:
            phones.append([s, e, lab])
        cursor = e
    if cursor < n:
        if phones and phones[-1][2] == "_":
            phones[-1][1] = n
        else:
            phones.append([cursor, n, "_"])
    return seg, [(s, e, lab) for s, e, lab in phones if e > s]


def _word_groups(text: str, events: list[tuple]) -> list[tuple[list[int], list[int]]]:
    """Match WORD events to the text's words: per event, ``(word indices, phone event
    indices)``. espeak sometimes speaks two words as one ("in the", "out of") and
    reports one WORD event for both; such a group then holds several words.

    Raises :class:`AlignmentError` if the events do not fit the text.
    """
    starts = [m.start() for m in _WORD.finditer(text)]
    word_ev = [i for i, e in enumerate(events) if e[0] == EV_WORD]
    first = []
    for i in word_ev:
        try:
            first.append(starts.index(events[i][1] - 1))
        except ValueError:
            raise AlignmentError(f"espeak reported a word at character {events[i][1]} that "
                                 f"does not start a word of the text: {text!r}") from None
    if first[:1] != [0] or first != sorted(set(first)):
        raise AlignmentError(f"espeak's words do not follow the text: {text!r}")
    groups = []
    for k, i in enumerate(word_ev):
        stop_ev = word_ev[k + 1] if k + 1 < len(word_ev) else len(events)
        stop_word = first[k + 1] if k + 1 < len(word_ev) else len(starts)
        tp = events[i][1]
        phones = [j for j in range(i + 1, stop_ev) if events[j][0] == EV_PHONEME
                  and events[j][1] == tp and _phone_label(events[j][4]) != "_"]
        groups.append((list(range(first[k], stop_word)), phones))
    return groups


def _word_segments(text: str, seg: dict, assignment: list[list[int]]) -> list[tuple[int, int, str]]:
    """Word segments from the phone events assigned to each word of ``text``."""
    words = []
    for w, ph in zip(_WORD.findall(text), assignment):
        spans = [seg[j] for j in ph if j in seg]
        if not spans:
            raise AlignmentError(f"word {w!r} has no phones: {text!r}")
        words.append((spans[0][0], spans[-1][1], w))
    for a, b in zip(words, words[1:]):
        if b[0] < a[1]:
            raise AlignmentError(f"words {a[2]!r} and {b[2]!r} overlap: {text!r}")
    return words


def _split_groups(groups, counts: list[int]) -> list[list[int]] | None:
    """Per-word phone events: a multi-word group's phones are dealt out in order using
    ``counts`` (each word's number of phones when spoken apart); None if they do not add up."""
    out = []
    for words, phones in groups:
        if len(words) == 1:
            out.append(phones)
            continue
        need = [counts[w] for w in words]
        if sum(need) != len(phones) or 0 in need:
            return None
        k = 0
        for c in need:
            out.append(phones[k:k + c])
            k += c
    return out


ZWSP = "\u200b"   # a word break espeak respects, yet never joins words across


def _synth_aligned(text: str, voice: str, rate: int, pitch: int, noise_seed: int):
    """Synthesize and align (samples at espeak's rate): ``(pcm, sr, words, phones)``.

    Where espeak joins words (one WORD event for "in the"), the text is spoken again
    with a zero-width space in place of the joining space, which gives every word its
    own event; the joined words' phones in the first rendering are then dealt out
    with the phone counts of the second. If those do not add up, the second rendering
    is used instead (its function words then lose their weak forms).
    """
    pcm, sr, events = _espeak(text, voice, rate, pitch, noise_seed)
    if len(pcm) == 0:
        raise AlignmentError(f"espeak produced no audio: {text!r}")
    groups = _word_groups(text, events)
    seg, phones = _phone_segments(events, len(pcm))
    if all(len(w) == 1 for w, _ in groups):
        return pcm, sr, _word_segments(text, seg, [p for _, p in groups]), phones
    starts = [m.start() for m in _WORD.finditer(text)]
    chars = list(text)
    alt_groups, alt = groups, None
    for _ in range(3):
        joined = [w for ws, _ in alt_groups for w in ws[1:]]
        if not joined:
            break
        for w in joined:
            if chars[starts[w] - 1] != " ":
                raise AlignmentError(f"espeak joined words not separated by a space: {text!r}")
            chars[starts[w] - 1] = ZWSP
        alt = _espeak("".join(chars), voice, rate, pitch, noise_seed)
        alt_groups = _word_groups("".join(chars), alt[2])
    if any(len(w) > 1 for w, _ in alt_groups):
        raise AlignmentError(f"espeak keeps joining words: {text!r}")
    assignment = _split_groups(groups, [len(p) for _, p in alt_groups])
    if assignment is not None:
        try:
            return pcm, sr, _word_segments(text, seg, assignment), phones
        except AlignmentError:
            pass
    pcm, sr, events = alt
    seg, phones = _phone_segments(events, len(pcm))
    return pcm, sr, _word_segments(text, seg, [p for _, p in alt_groups]), phones


@dataclass
class Utterance:
    """One synthesized utterance: mono float32 audio and its segments in seconds."""

    text: str
    voice: str
    rate: int
    pitch: int
    audio: np.ndarray
    sample_rate: int
    words: list[tuple[float, float, str]]
    phones: list[tuple[float, float, str]]

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate

    def alignment(self) -> dict:
        """The JSON alignment stored beside each corpus WAV."""
        return {"text": self.text, "voice": self.voice, "rate": self.rate, "pitch": self.pitch,
                "sample_rate": self.sample_rate, "num_samples": int(len(self.audio)),
                "words": [list(w) for w in self.words], "phones": [list(p) for p in self.phones]}


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
               sample_rate: int = SAMPLE_RATE, noise_seed: int = 0) -> Utterance:
    """Speak ``text`` with espeak-ng: audio at ``sample_rate`` plus word and phone segments.

    Args:
        text: plain English; words are runs of ASCII letters (spell numbers out).
        voice: an espeak-ng voice, optionally with a variant (``"en-gb-scotland+f4"``).
        rate: words per minute (80-450).
        pitch: 0-99 (50: the voice's own).
        sample_rate: output rate (espeak runs at 22050 Hz and is resampled).
        noise_seed: seeds the breath noise some variants add.

    Deterministic: the same arguments give the same samples.

    Raises:
        ValueError: bad arguments or an unknown voice; :class:`AlignmentError` if espeak's
            word events do not match the text (abbreviations, digits, ...).
    """
    text = normalise_text(text)
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise ValueError(f"rate must be in {RATE_RANGE[0]}..{RATE_RANGE[1]} words per minute, got {rate}")
    if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
        raise ValueError(f"pitch must be in {PITCH_RANGE[0]}..{PITCH_RANGE[1]}, got {pitch}")
    if not voice_available(voice):
        raise ValueError(f"unknown espeak-ng voice: {voice}")
    pcm, sr, words, phones = _synth_aligned(text, voice, rate, pitch, noise_seed)

    def sec(s: int) -> float:
        return round(s / sr, 5)

    audio = resample(pcm.astype(np.float32) / 32768.0, sr, sample_rate)
    return Utterance(text, voice, int(rate), int(pitch), audio, int(sample_rate),
                     [(sec(s), sec(e), w) for s, e, w in words],
                     [(sec(s), sec(e), p) for s, e, p in phones])


# --------------------------------------------------------------------------- text

def _pairs(s: str) -> list[tuple[str, str]]:
    """"cat dog mouse:mice" -> [("cat", "cats"), ("dog", "dogs"), ("mouse", "mice")]."""
    out = []
    for w in s.split():
        sing, _, plural = w.partition(":")
        if not plural:
            plural = sing + ("es" if sing.endswith(("s", "x", "ch", "sh")) else "s")
        out.append((sing, plural))
    return out


ANIMATES = _pairs("""cat dog bird horse fox rabbit mouse:mice duck goat sheep:sheep cow pig
    child:children man:men woman:women teacher doctor farmer baker driver sailor painter
    student neighbour friend brother sister king queen captain singer gardener pilot nurse
    cook girl boy""")
THINGS = _pairs("""box book cup chair table door window lamp clock bottle basket bicycle car
    boat train bus kite ball hat coat shoe key letter picture flower tree apple cake
    loaf:loaves egg candle blanket pencil bucket ladder map parcel ribbon rope spoon plate
    bowl jar drum bell flag tent wagon engine radio camera jacket scarf glove umbrella""")
PLACES = """kitchen garden market station river forest library school office village harbour
    bridge hill beach park museum bakery hospital farm road city island valley castle
    tower square church meadow field cottage lake shop hotel theatre""".split()
ADJECTIVES = """big small old new young tall short long warm cold quiet loud happy sad bright
    dark soft hard heavy light clean dirty busy lazy clever gentle tired hungry friendly
    strange simple famous tiny huge round empty full fresh sweet wooden rusty shiny noisy
    careful polite brave calm proud funny lucky sleepy silly plain broken""".split()
COLOURS = "red blue green yellow orange purple brown black white grey pink golden silver".split()
NUMBERS = """two three four five six seven eight nine ten eleven twelve fifteen twenty thirty
    forty fifty""".split()
VERBS_T = """saw found painted carried dropped opened closed washed bought sold cleaned fixed
    moved lifted pushed pulled watched followed chased visited helped called lost made built
    hid kept took brought held caught drew wanted liked noticed counted borrowed carved
    wrapped packed""".split()
VERBS_I = """slept waited laughed smiled sang danced walked ran jumped stopped arrived left sat
    stood worked played rested shouted whistled listened""".split()
ADVERBS = "slowly quickly quietly loudly happily carefully suddenly gently again together".split()
TIMES = ["today", "yesterday", "tonight", "this morning", "this evening", "last night",
         "last week", "every day", "at noon", "at midnight", "in the spring", "in the summer",
         "in the autumn", "in the winter", "on Monday", "on Tuesday", "on Wednesday",
         "on Thursday", "on Friday", "on Saturday", "on Sunday", "after lunch", "before dinner"]
PREPOSITIONS = "near behind beside outside past".split()
DETERMINERS = "the the the a this that every my your his her our their".split()
SUBJECTS = "I you we they she he".split()
RELATIVES = "mother father uncle aunt cousin grandmother grandfather".split()

_VOWEL_START = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def _noun_phrase(rng: random.Random, nouns, plural: bool = False, det: str | None = None) -> str:
    sing, plur = rng.choice(nouns)
    words = []
    if plural:
        words.append(det or rng.choice(NUMBERS + ["some", "the", "many", "these", "those"]))
    else:
        words.append(det or rng.choice(DETERMINERS))
    r = rng.random()
    if r < 0.35:
        words.append(rng.choice(ADJECTIVES))
    elif r < 0.6:
        words.append(rng.choice(COLOURS))
    elif r < 0.7:
        words += [rng.choice(ADJECTIVES), rng.choice(COLOURS)]
    words.append(plur if plural else sing)
    return " ".join(words)


def _place(rng: random.Random) -> str:
    return f"{rng.choice(PREPOSITIONS)} the {rng.choice(PLACES)}"


def generate_sentence(rng: random.Random) -> str:
    """One sentence from a small English grammar (3-16 words, letters only)."""
    c = rng.choice
    any_noun = ANIMATES + THINGS
    t = rng.randrange(14)
    if t == 0:
        s = f"{_noun_phrase(rng, ANIMATES)} {c(VERBS_T)} {_noun_phrase(rng, any_noun)} {_place(rng)}."
    elif t == 1:
        s = f"{c(NUMBERS)} {c(COLOURS)} {c(THINGS)[1]} were {_place(rng)} {c(TIMES)}."
    elif t == 2:
        s = f"the {c(COLOURS)} {c(any_noun)[0]} is {c(['very ', 'quite ', ''])}{c(ADJECTIVES)}."
    elif t == 3:
        s = f"{c(SUBJECTS)} {c(VERBS_T)} {_noun_phrase(rng, any_noun, plural=True)} {c(TIMES)}."
    elif t == 4:
        s = f"did you see {_noun_phrase(rng, any_noun, det='the')} {_place(rng)}?"
    elif t == 5:
        s = f"where did the {c(ANIMATES)[0]} put the {c(COLOURS)} {c(THINGS)[0]}?"
    elif t == 6:
        s = f"{_noun_phrase(rng, ANIMATES)} {c(VERBS_I)} {c(ADVERBS)} {_place(rng)}."
    elif t == 7:
        s = (f"{_noun_phrase(rng, ANIMATES)} {c(VERBS_I)}, and "
             f"{_noun_phrase(rng, ANIMATES)} {c(VERBS_I)} {c(ADVERBS)}.")
    elif t == 8:
        s = (f"please bring {c(NUMBERS)} {c(THINGS)[1]} and a {c(COLOURS)} {c(THINGS)[0]} "
             f"to the {c(PLACES)}.")
    elif t == 9:
        s = f"we need {_noun_phrase(rng, THINGS, plural=True)} for the {c(PLACES)}."
    elif t == 10:
        s = f"there are {c(NUMBERS)} {c(ADJECTIVES)} {c(any_noun)[1]} in the {c(PLACES)}."
    elif t == 11:
        s = f"my {c(RELATIVES)} {c(VERBS_T)} {_noun_phrase(rng, THINGS, det='a')} {c(TIMES)}."
    elif t == 12:
        a, b = rng.sample(ADJECTIVES, 2)
        s = f"is the {c(any_noun)[0]} {a} or {b}?"
    else:
        s = f"{c(TIMES)}, {_noun_phrase(rng, ANIMATES)} {c(VERBS_I)} {c(ADVERBS)}."
    s = _VOWEL_START.sub(lambda m: m.group(1) + "n ", s)
    return s[0].upper() + s[1:]


# Simple sentences written for this project (public domain), letters and basic punctuation only.
SENTENCES = (
    "The sun came up over the hills and the birds began to sing.",
    "Please close the window before you go to bed.",
    "My brother keeps his old bicycle in the garden shed.",
    "We walked along the river until it started to rain.",
    "The train to the city leaves at seven in the morning.",
    "She painted the kitchen door a bright shade of blue.",
    "There is a small bakery at the end of our street.",
    "The children built a tall tower out of wooden blocks.",
    "Could you pass me the salt and the pepper, please?",
    "The old clock in the hall stopped at midnight.",
    "He forgot his umbrella on the bus again.",
    "A cold wind blew across the empty beach.",
    "The library is closed on Sundays and on public holidays.",
    "Our neighbour grows tomatoes and beans in his garden.",
    "The cat slept all afternoon in a patch of sunlight.",
    "We need more milk, some bread, and a dozen eggs.",
    "The farmer counted his sheep twice before dark.",
    "Turn left at the church and walk past the school.",
    "The teacher wrote three questions on the board.",
    "It was so quiet that we could hear the clock ticking.",
    "The boat drifted slowly towards the little island.",
    "I would like a cup of tea with a little honey.",
    "The museum has a famous painting of a ship in a storm.",
    "They moved to a small village near the mountains.",
    "The dog barked at every car that drove past the house.",
    "Snow fell all night and covered the whole valley.",
    "The market is busy on Saturday mornings.",
    "Put the heavy boxes on the floor near the door.",
    "Her grandmother tells wonderful stories about the sea.",
    "The lights went out just as the film was starting.",
    "He fixed the broken chair with glue and a few nails.",
    "We watched the fireworks from the top of the hill.",
    "The soup needs a little more salt.",
    "Every morning she runs around the park before work.",
    "The baby laughed when the puppy licked her hand.",
    "A tall man in a grey coat was waiting at the station.",
    "The bridge was closed because of the flood.",
    "Do you know where I left my keys?",
    "The apples on that tree are not ready yet.",
    "The pilot said the flight would take about two hours.",
    "Mother baked a chocolate cake for the party.",
    "The doctor told him to rest for a week.",
    "Please write your name at the top of the page.",
    "The road to the farm is long and narrow.",
    "We heard thunder far away over the forest.",
    "The shop on the corner sells fresh flowers.",
    "The students listened carefully to the story.",
    "My sister is learning to play the violin.",
    "The kettle is boiling, so the tea will be ready soon.",
    "The horse jumped over the fence and ran into the field.",
    "Leave your muddy boots outside the front door.",
    "The moon was bright and the sky was full of stars.",
    "He carried the basket of apples up the hill.",
    "The hotel has a garden with a small fountain.",
    "Nobody knew who had left the gate open.",
    "The river is too deep to cross here.",
    "The cook added onions, carrots, and potatoes to the pot.",
    "We are going to visit our cousins in the summer.",
    "The singer thanked the crowd and waved goodbye.",
    "A yellow kite was stuck in the branches of the oak tree.",
    "The little boy hid behind the curtain.",
    "It takes ten minutes to walk to the harbour.",
    "The queen smiled and opened the new hospital.",
    "Wash your hands before you sit down to eat.",
    "The wind turned the pages of the open book.",
    "Our train was late because of the snow.",
    "She found an old letter inside the drawer.",
    "The fox ran across the meadow and into the woods.",
    "Please speak a little more slowly.",
    "The lamp on the desk gives a warm yellow light.",
)


def _sentence_key(text: str) -> str:
    return " ".join(w.lower() for w in text_words(text))


def split_of(text: str) -> str:
    """``"test"`` for about one sentence in eight, else ``"train"``: a hash of the
    lower-cased words, so punctuation and capitals do not move a sentence."""
    h = int(hashlib.sha256(_sentence_key(text).encode()).hexdigest()[:8], 16)
    return "test" if h % 8 == 0 else "train"


def corpus_sentences(seed: int):
    """Endless deterministic stream of distinct sentences: a fifth from
    :data:`SENTENCES` (while any are left), the rest generated."""
    rng = random.Random(seed)
    fixed = list(SENTENCES)
    rng.shuffle(fixed)
    seen: set[str] = set()
    while True:
        s = fixed.pop() if fixed and rng.random() < 0.2 else generate_sentence(rng)
        k = _sentence_key(s)
        if k not in seen:
            seen.add(k)
            yield s


# --------------------------------------------------------------------------- corpus

CORPUS_FORMAT = "hvqc-speech-corpus"
RATE_CHOICES = (150, 205)      # words per minute, uniform
PITCH_CHOICES = (35, 65)


def make_corpus(out_dir: str | Path, n_train: int, n_test: int, seed: int = 0,
                progress: bool = False) -> dict:
    """Synthesize ``n_train`` + ``n_test`` utterances into ``out_dir``.

    Writes ``train/NNNNNN.wav`` and ``test/NNNNNN.wav`` (16 kHz mono 16-bit), a JSON
    alignment beside each (``.json``: text, voice, rate, pitch, sample_rate,
    num_samples, ``words``/``phones`` as ``[start_s, end_s, label]``) and
    ``index.json``. Sentences come from :func:`corpus_sentences` and go to the split
    :func:`split_of` gives them; voice, rate and pitch are drawn per utterance. The
    same arguments give byte-identical files. Sentences espeak misreads
    (:class:`AlignmentError`) are skipped and counted in the index.

    Returns the index (also written to ``index.json``).
    """
    if n_train < 0 or n_test < 0:
        raise ValueError("utterance counts must be 0 or more")
    out = Path(out_dir)
    voices = available_voices()
    if not voices:
        raise OSError("none of the corpus voices is in the bundled espeak-ng data")
    want = {"train": n_train, "test": n_test}
    entries: dict[str, list] = {"train": [], "test": []}
    for split, n in want.items():
        if n:
            (out / split).mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"hvqc-corpus-{seed}")
    sentences = corpus_sentences(seed)
    rejected = []
    phone_set: set[str] = set()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_train + n_test, desc="corpus", leave=False, disable=None)
    try:
        while any(len(entries[s]) < want[s] for s in want):
            text = next(sentences)
            split = split_of(text)
            if len(entries[split]) >= want[split]:
                continue
            voice = rng.choice(voices)
            rate = rng.randint(*RATE_CHOICES)
            pitch = rng.randint(*PITCH_CHOICES)
            noise_seed = rng.getrandbits(31)
            try:
                utt = synthesize(text, voice, rate, pitch, SAMPLE_RATE, noise_seed)
            except AlignmentError as e:
                rejected.append(str(e))
                if len(rejected) > 100 + (n_train + n_test) // 10:
                    raise RuntimeError(f"espeak misread too many sentences; last: {e}") from None
                continue
            uid = f"{len(entries[split]):06d}"
            write_wav(out / split / f"{uid}.wav", utt.audio, SAMPLE_RATE)
            (out / split / f"{uid}.json").write_text(json.dumps(utt.alignment()) + "\n")
            phone_set.update(p[2] for p in utt.phones)
            entries[split].append({"id": uid, "wav": f"{split}/{uid}.wav",
                                   "alignment": f"{split}/{uid}.json", "text": text,
                                   "voice": voice, "duration": round(utt.duration, 5)})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    index = {"format": CORPUS_FORMAT, "version": 1, "seed": seed, "sample_rate": SAMPLE_RATE,
             "voices": voices, "phones": sorted(phone_set), "rejected": len(rejected),
             "train": entries["train"], "test": entries["test"]}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


class CorpusItem(NamedTuple):
    path: Path                                  # the WAV file
    text: str
    voice: str
    words: list[tuple[float, float, str]]
    phones: list[tuple[float, float, str]]


def corpus_items(root: str | Path, split: str) -> list[CorpusItem]:
    """The utterances of one split (``"train"`` or ``"test"``) of a :func:`make_corpus` folder."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    root = Path(root)
    idx_path = root / "index.json"
    if not idx_path.exists():
        raise FileNotFoundError(f"not a speech corpus (no index.json): {root}")
    index = json.loads(idx_path.read_text())
    if index.get("format") != CORPUS_FORMAT:
        raise ValueError(f"not a speech corpus index: {idx_path}")
    items = []
    for e in index[split]:
        a = json.loads((root / e["alignment"]).read_text())
        items.append(CorpusItem(root / e["wav"], a["text"], a["voice"],
                                [tuple(w) for w in a["words"]], [tuple(p) for p in a["phones"]]))
    return items


# --------------------------------------------------------------------------- FSDD

class FsddItem(NamedTuple):
    path: Path
    digit: int
    speaker: str


_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
FSDD_TEST_TAKES = range(0, 5)     # the upstream split: takes 0-4 are the test set


def fsdd_items(split: str, root: str | Path | None = None) -> list[FsddItem]:
    """Free Spoken Digit Dataset files of one split: ``(path, digit, speaker)``,
    sorted by speaker, digit and take. Takes 0-4 are ``"test"``, the rest ``"train"``;
    ``"all"`` gives both. ``root`` defaults to ``data_root()/fsdd``."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    base = Path(root) if root is not None else require("fsdd")
    folder = base / "recordings" if (base / "recordings").is_dir() else base
    found = []
    for p in folder.glob("*.wav"):
        m = _FSDD_NAME.match(p.name)
        if not m:
            continue
        digit, speaker, take = int(m.group(1)), m.group(2), int(m.group(3))
        is_test = take in FSDD_TEST_TAKES
        if split == "all" or (split == "test") == is_test:
            found.append((speaker, digit, take, p))
    found.sort()
    return [FsddItem(p, d, s) for s, d, _, p in found]
