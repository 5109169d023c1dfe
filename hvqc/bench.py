"""``hvqc bench``: bitrate against quality for hvqc and other codecs on an image folder.

One adapter per codec (:class:`Codec`): hvqc at every level of a model, Pillow's
JPEG, WebP, JPEG 2000 and AVIF over a quality ladder reaching down to each one's
lowest rates, and learned CompressAI peers loaded from local checkpoints. Every
setting of every codec is run on every image in memory; the rate is the whole
encoded file (headers included), quality is measured on the decoded RGB image.

CompressAI's own adapters (``compressai.utils.bench.codecs``) are not reused: they
read from a path and pass only ``quality`` to Pillow, so they cannot set WebP's
method, JPEG's Huffman optimisation, JPEG 2000's rate mode or AVIF's speed, and
they have no JPEG 2000 or AVIF class. Their results format is kept (one JSON per
codec, lists over settings), and CompressAI's zoo and padding helpers serve the peers.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import PIL
import torch
from PIL import Image, features

from .analysis.metrics import (MS_SSIM_MIN_SIDE, as_float_rgb, bpp, mean_or_none, ms_ssim,
                               ms_ssim_db, ms_ssim_defined, psnr)
from .analysis.rd import bd_rate, quality_overlap, rd_hull
from .image import IMAGE_SUFFIXES, load_image

__all__ = ["BenchError", "Codec", "Encoded", "JPEG", "WebP", "JPEG2000", "AVIF", "HvqcCodec", "HvqcRDCodec",
           "PeerCodec", "KeptCodec", "BUILTIN", "PEER_ARCHS", "list_images", "parse_codecs", "parse_peers",
           "make_codecs", "measure", "run", "summarise", "compressai_json", "bd_rates",
           "write_outputs", "stale_outputs", "BenchResult"]

METRICS = ("bpp", "psnr-rgb", "ms-ssim-rgb", "ms-ssim-rgb-db", "encoding_time", "decoding_time")


class BenchError(ValueError):
    """A bad argument or input, reported in one line."""


@dataclass
class Encoded:
    """One encoded image: what the decoder needs, and the bytes a file would hold.
    ``encode_seconds``: what encoding it costs, for a codec that shares one image's work
    between its settings (:class:`HvqcRDCodec`); None: the time ``encode`` took."""

    data: object
    num_bytes: int
    encode_seconds: float | None = None


class Codec:
    """One codec over a ladder of settings. Subclasses set ``key`` (a short id, also the
    JSON file name), ``name``, ``description`` and ``settings``."""

    key = ""
    name = ""
    description = ""
    settings: Sequence = ()

    def label(self, setting) -> str:
        return str(setting)

    def encode(self, img: Image.Image, setting) -> Encoded:
        raise NotImplementedError

    def decode(self, enc: Encoded, setting) -> Image.Image:
        raise NotImplementedError


class PillowCodec(Codec):
    """A format Pillow writes; encoded to and decoded from memory (BytesIO)."""

    fmt = ""
    feature = ""

    def __init__(self):
        if not features.check(self.feature):
            raise BenchError(f"codec {self.key}: this Pillow build has no {self.name} support")

    def options(self, setting) -> dict:
        raise NotImplementedError

    def encode(self, img: Image.Image, setting) -> Encoded:
        buf = io.BytesIO()
        img.save(buf, format=self.fmt, **self.options(setting))
        data = buf.getvalue()
        return Encoded(data, len(data))

    def decode(self, enc: Encoded, setting) -> Image.Image:
        with Image.open(io.BytesIO(enc.data)) as im:
            im.load()
            return im.convert("RGB")


class JPEG(PillowCodec):
    key, name, fmt, feature = "jpeg", "JPEG", "JPEG", "jpg"
    settings = (1, 2, 3, 5, 8, 10, 15, 20, 30, 50)
    description = (f"JPEG, Pillow {PIL.__version__} (libjpeg {features.version('jpg')}), quality "
                   f"1-50, 4:2:0, optimised Huffman tables (about half the bytes of the default "
                   f"tables at quality 1)")

    def label(self, q) -> str:
        return f"q{q}"

    def options(self, q) -> dict:
        return {"quality": q, "optimize": True}


class WebP(PillowCodec):
    key, name, fmt, feature = "webp", "WebP", "WEBP", "webp"
    settings = (0, 2, 5, 10, 15, 20, 30, 40, 55, 75)
    description = (f"WebP (lossy), Pillow {PIL.__version__} (libwebp {features.version('webp')}), "
                   f"quality 0-75, method 6")

    def label(self, q) -> str:
        return f"q{q}"

    def options(self, q) -> dict:
        return {"quality": q, "method": 6}


class JPEG2000(PillowCodec):
    key, name, fmt, feature = "jpeg2000", "JPEG 2000", "JPEG2000", "jpg_2000"
    settings = (1200, 800, 600, 400, 300, 200, 120, 80, 48, 24)
    description = (f"JPEG 2000, Pillow {PIL.__version__} (OpenJPEG {features.version('jpg_2000')}), "
                   f"quality_mode rates, compression ratio 1200:1 to 24:1 (0.02-1 bpp), "
                   f"irreversible 9/7 wavelet, J2K codestream")

    def label(self, r) -> str:
        return f"{r}:1"

    def options(self, r) -> dict:
        return {"quality_mode": "rates", "quality_layers": [r], "irreversible": True, "no_jp2": True}


class AVIF(PillowCodec):
    key, name, fmt, feature = "avif", "AVIF", "AVIF", "avif"
    settings = (0, 5, 10, 15, 20, 30, 40, 50, 60, 70)
    speed = 4        # speed 0 is about 4x slower here for about 0.15 dB
    description = (f"AVIF, Pillow {PIL.__version__} (libavif {features.version('avif')}), quality "
                   f"0-70, speed {speed}, 4:2:0")

    def label(self, q) -> str:
        return f"q{q}"

    def options(self, q) -> dict:
        return {"quality": q, "speed": self.speed}


class HvqcCodec(Codec):
    """Every level of an installed hvqc model (1 = finest), one ``.hvqc`` file each, and
    between two levels the refinement that sends half of the lower one's coding groups
    (a checkerboard of its codes; settings are ``(level, groups)``, 0 = whole level).
    With ``search``, every setting's codes are searched (:mod:`hvqc.search`; a
    refinement's as it decodes): a second entry, ``hvqc-search``, so the plain encoder
    stays on the plot beside it."""

    key = "hvqc"

    def __init__(self, model: str, search=None):
        from .coding import num_groups
        from .zoo import load
        self.lm = load(model)
        self.search = search if search is not None and search.steps else None
        n = self.lm.model.num_levels
        self.groups = [num_groups(self.lm, l) for l in range(n)]
        half = [g // 2 for g in self.groups]         # 0 where a level has one group
        self.settings = tuple(s for lv in range(1, n + 1)
                              for s in [(lv, 0)] + ([(lv, half[lv - 1])] if lv < n and half[lv - 1] else []))
        self.name = f"hvqc ({self.lm.name})"
        self.description = (f"hvqc model {self.lm.name!r} (weights {self.lm.sha256[:8]}), levels "
                            f"1-{n} and the half-way refinements between them, whole .hvqc file")
        if self.search:
            from .codec import searchable_levels
            self.settings = tuple(st for st in self.settings if st[0] in searchable_levels(self.lm))
            self.key = "hvqc-search"
            self.name = f"hvqc ({self.lm.name}, search {self.search.steps})"
            self.description += (f"; each setting's codes searched ({self.search.steps} steps, "
                                 f"rate weight {self.search.lam:g})")

    def label(self, setting) -> str:
        level, groups = setting
        return f"L{level}" + (f":{groups}/{self.groups[level - 1]}" if groups else "")

    def encode(self, img: Image.Image, setting) -> Encoded:
        from .codec import compress_image
        level, groups = setting
        data = compress_image(self.lm, img, level, groups=groups, search=self.search).data
        return Encoded(data, len(data))

    def decode(self, enc: Encoded, setting) -> Image.Image:
        from .api import decompress
        return decompress(enc.data, model=self.lm).convert("RGB")


class HvqcRDCodec(HvqcCodec):
    """hvqc with the cut chosen per image (``hvqc encode --lambda``): the level or
    refinement with the least training distortion plus ``lambda`` times its bpp, over a
    ladder of lambdas, the bytes ``hvqc encode --lambda`` writes. Without a search, an
    image's cuts are scored once (:func:`hvqc.codec.scored_cuts`), each lambda picks from
    them (:func:`hvqc.codec.pick_rd`) and each setting is charged the time of one encode.
    With ``search`` (a second entry, ``hvqc-rd-search``), the codes of the levels that can
    win are searched with the rate weight ``lambda`` (:func:`hvqc.codec.compress_image_rd`),
    so each lambda is its own encode (a decode of every whole level, a search and a decode
    of every cut of each level within 5 % of the best, 30 % for the top level
    (:func:`hvqc.codec.screened_cuts`), and one more search where the pick
    is a refinement), over the same ladder. The ladder is
    ``bench/ladder.py``'s for the shipped model: 13 slopes where the plain entry's mean
    bpp on BSDS500's 200 test photos (training photos, never Kodak) falls evenly in log,
    about 1.29x apart, so no span of the curve is drawn by one long chord."""

    LAMBDAS = (0.5, 1, 1.3, 1.5, 1.8, 2.2, 4.5, 6.8, 8.4, 10, 13, 25, 45)

    def __init__(self, model: str, search=None):
        super().__init__(model, search)
        self.settings = self.LAMBDAS
        self.key = "hvqc-rd-search" if self.search else "hvqc-rd"
        tail = f", search {self.search.steps}" if self.search else ""
        self.name = f"hvqc ({self.lm.name}, per-image lambda{tail})"
        self.description = (f"hvqc model {self.lm.name!r} (weights {self.lm.sha256[:8]}), whole .hvqc "
                            f"file at the level or refinement with the least training distortion "
                            f"+ lambda x bpp, per image (`hvqc encode --lambda`)")
        if self.search:
            from .codec import SCREEN_MARGIN, SCREEN_MARGIN_TOP
            self.description += (f"; the codes of each level that can win (plain cost within "
                                 f"{100 * SCREEN_MARGIN:g} % of the best level's, "
                                 f"{100 * SCREEN_MARGIN_TOP:g} % for the top level) searched "
                                 f"({self.search.steps} steps, rate weight lambda) for its own cuts")
        self._scored = (None, None, 0.0)     # (image, its scored cuts, seconds)

    def label(self, lam) -> str:
        return f"lambda {lam:g}"

    def encode(self, img: Image.Image, lam) -> Encoded:
        from .codec import compress_image_rd, pick_rd, scored_cuts
        if self.search:                           # the codes depend on lambda: one encode each
            t = time.perf_counter()
            data = compress_image_rd(self.lm, img, lam, search=self.search)[0]
            return Encoded(data, len(data), time.perf_counter() - t)
        if self._scored[0] is not img:
            t = time.perf_counter()
            cuts = scored_cuts(self.lm, img)
            self._scored = (img, cuts, time.perf_counter() - t)
        _, cuts, seconds = self._scored
        t = time.perf_counter()
        data = pick_rd(cuts, lam, img.width * img.height)[0]
        return Encoded(data, len(data), seconds + time.perf_counter() - t)


def _peer_archs() -> dict:
    """CompressAI's image architectures by zoo name (imported quietly: CompressAI's
    modules trigger torch's ``torch.jit.script`` deprecation warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script", category=FutureWarning)
        import compressai.ops  # noqa: F401 - used by PeerCodec
        from compressai.zoo.image import model_architectures
    return dict(model_architectures)


PEER_ARCHS = ("bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018",
              "cheng2020-anchor", "cheng2020-attn")


def _one_line(e: BaseException) -> str:
    text = " ".join(t.strip() for t in str(e).strip().splitlines()[:2])
    return f"{type(e).__name__}: {text[:200]}"


def _stem(p: Path) -> str:
    for suffix in (".pth.tar", ".pt", ".pth", ".tar"):
        if p.name.endswith(suffix) and len(p.name) > len(suffix):
            return p.name[: -len(suffix)]
    return p.name


def _labels(paths: Sequence[Path]) -> list[str]:
    """A setting label per checkpoint: its file stem, or where stems repeat (training runs
    all write ``ckpt.pth.tar``) its run folder's name, else numbered."""
    labels = [_stem(p) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [p.parent.name or _stem(p) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{s}#{i + 1}" for i, s in enumerate(labels)]
    return labels


class PeerCodec(Codec):
    """A CompressAI model, one local checkpoint per setting; nothing is downloaded.

    Each is built untrained from its architecture class by ``from_state_dict`` (which
    reads N and M from the weights, so any size loads, unlike the zoo's quality-indexed
    ``pretrained=False`` constructors), then ``update()`` freezes its integer CDFs.
    Inputs are zero-padded to a multiple of 64 as CompressAI's evaluation does. The rate
    is the bytes of ``model.compress``'s strings (CompressAI's own measure: no header).
    """

    PAD = 64          # CompressAI's evaluation pads to a multiple of 2**6

    def __init__(self, arch: str, paths: Sequence[Path]):
        cls = _peer_archs()[arch]
        from compressai.zoo import load_state_dict
        self.key = self.name = arch
        self.settings = tuple(range(len(paths)))
        self.paths = list(paths)
        self.models = []
        for p in self.paths:
            try:
                ck = torch.load(p, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - unreadable, or needs pickled code (refused)
                raise BenchError(f"--peer {arch}={p}: not a checkpoint of plain tensors "
                                 f"(torch.load with weights_only=True cannot read it)") from None
            try:
                state = ck.get("state_dict", ck) if isinstance(ck, dict) else None
                if not isinstance(state, dict):
                    raise ValueError("not a state_dict")
                net = cls.from_state_dict(load_state_dict(state)).eval()
                net.update(force=True)
            except Exception as e:  # noqa: BLE001 - any failure is the checkpoint's
                raise BenchError(f"--peer {arch}={p}: cannot load a {arch} checkpoint "
                                 f"({_one_line(e)})") from None
            self.models.append(net)
        self.labels = _labels(self.paths)
        sizes = ", ".join(f"{sum(t.numel() for t in m.parameters()) / 1e6:.2f}" for m in self.models)
        self.description = (f"CompressAI {arch} ({sizes} M parameters), built untrained and loaded "
                            f"from local checkpoints {', '.join(map(str, self.paths))}; rate = "
                            f"bytes of the model.compress strings (no container header)")

    def label(self, i) -> str:
        return self.labels[i]

    @torch.no_grad()
    def encode(self, img: Image.Image, i) -> Encoded:
        from compressai.ops import compute_padding
        x = as_float_rgb(img).float()
        h, w = x.shape[2:]
        pad, unpad = compute_padding(h, w, min_div=self.PAD)
        out = self.models[i].compress(torch.nn.functional.pad(x, pad, mode="constant", value=0))
        size = sum(len(s) for group in out["strings"] for s in group)
        return Encoded((out, unpad), size)

    @torch.no_grad()
    def decode(self, enc: Encoded, i) -> Image.Image:
        out, unpad = enc.data
        x = self.models[i].decompress(out["strings"], out["shape"])["x_hat"]
        x = torch.nn.functional.pad(x, unpad).clamp(0, 1)
        arr = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        return Image.fromarray(arr, "RGB")


_KEPT = "; kept from an earlier run (not measured again)"


class KeptCodec(Codec):
    """A codec whose results an earlier bench wrote (its ``<key>.json``), carried into this
    one instead of measured again (``hvqc bench --keep``): a peer whose checkpoint is gone,
    or a slow codec that did not change. Its per-image rows are reused as they are; it
    cannot encode, so the crop sheet has no panel for it."""

    def __init__(self, folder: Path, key: str):
        path = Path(folder) / f"{key}.json"
        try:
            doc = json.loads(path.read_text())
            rows, settings = doc["per_image"], list(doc["settings"])
            name, description = str(doc["name"]), str(doc["description"])
            if not all(isinstance(r, dict) and r.get("codec") == key for r in rows):
                raise ValueError("rows of another codec")
        except FileNotFoundError:
            raise BenchError(f"--keep {key}: no {path} (an earlier bench's results)") from None
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise BenchError(f"--keep {key}: {path} is not a bench result ({_one_line(e)})") from None
        self.key, self.name, self.settings, self.rows = key, name, settings, rows
        self.description = description if description.endswith(_KEPT) else description + _KEPT

    def rows_for(self, images: Sequence[str]) -> list[dict]:
        """This codec's rows for ``images``, in their order; every setting must be there."""
        by = {(r["image"], r["setting"]): r for r in self.rows}
        missing = [f"{i} {s}" for i in images for s in self.settings if (i, s) not in by]
        if missing:
            raise BenchError(f"--keep {self.key}: the earlier results lack {len(missing)} of this "
                             f"run's image settings (e.g. {missing[0]})")
        return [by[(i, s)] for i in images for s in self.settings]


BUILTIN = {"hvqc": HvqcCodec, "hvqc-rd": HvqcRDCodec, "jpeg": JPEG, "webp": WebP, "jpeg2000": JPEG2000,
           "avif": AVIF}
HVQC = ("hvqc", "hvqc-rd")      # built with the model (and with --search, searched too)


def list_images(folder: Path, limit: int | None = None) -> list[Path]:
    """The image files of a folder (by suffix, sorted, not recursive), the first ``limit``."""
    if limit is not None and limit < 1:
        raise BenchError(f"--limit must be 1 or more, got {limit}")
    if not folder.is_dir():
        raise BenchError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BenchError(f"no images in {folder}")
    return files[:limit]


def parse_codecs(text: str) -> list[str]:
    """``"hvqc,jpeg"`` -> ``["hvqc", "jpeg"]`` (lower-cased, repeats dropped), checked."""
    names = []
    for n in (t.strip().lower() for t in text.split(",")):
        if n and n not in names:
            if n not in BUILTIN:
                raise BenchError(f"unknown codec {n!r} (known: {', '.join(sorted(BUILTIN))}; "
                                 f"learned peers come with --peer NAME=CHECKPOINT)")
            names.append(n)
    return names


def parse_peers(items: Sequence[str]) -> dict[str, list[Path]]:
    """``["arch=path", ...]`` -> ``{arch: [paths]}``; one curve per architecture."""
    peers: dict[str, list[Path]] = {}
    for item in items:
        arch, sep, path = item.partition("=")
        if not sep or not arch or not path:
            raise BenchError(f"--peer must look like NAME=CHECKPOINT (got {item!r})")
        if arch not in PEER_ARCHS:
            raise BenchError(f"unknown peer {arch!r} (known: {', '.join(PEER_ARCHS)})")
        p = Path(path)
        if not p.is_file():
            raise BenchError(f"--peer {arch}: no such file: {p}")
        if p not in peers.setdefault(arch, []):
            peers[arch].append(p)
    return peers


def make_codecs(names: Sequence[str], model: str = "photo",
                peers: dict[str, list[Path]] | None = None, search=None,
                keep: Sequence[str] = (), folder: Path | None = None) -> list[Codec]:
    """Build the adapters (loads the hvqc model and every peer checkpoint); with
    ``search`` (:class:`hvqc.search.SearchSettings`), hvqc with searched codes too; with
    ``keep``, those codecs' results from the earlier bench in ``folder`` (last)."""
    searched = search is not None and search.steps > 0
    ours = [n for n in names if n in HVQC]
    if searched and not ours:
        raise BenchError("--search needs hvqc or hvqc-rd among the codecs")
    codecs = [BUILTIN[n](model) if n in HVQC else BUILTIN[n]() for n in names]
    if searched:                                 # each searched entry after its plain one
        for n in reversed(ours):
            codecs.insert(names.index(n) + 1, BUILTIN[n](model, search))
    codecs += [PeerCodec(arch, paths) for arch, paths in (peers or {}).items()]
    run = {c.key for c in codecs}
    for key in dict.fromkeys(keep):
        if key in run:
            raise BenchError(f"--keep {key}: that codec is also run this time")
        codecs.append(KeptCodec(folder, key))
    if not codecs:
        raise BenchError("no codecs to run")
    return codecs


def measure(codec: Codec, img: Image.Image, setting, ref: torch.Tensor | None = None
            ) -> tuple[dict, Image.Image]:
    """Encode and decode one RGB image at one setting; the row of measures and the
    decoded image. MS-SSIM is None for images under 161 px on a side."""
    ref = as_float_rgb(img) if ref is None else ref
    t = time.perf_counter()
    enc = codec.encode(img, setting)
    t_enc = time.perf_counter() - t if enc.encode_seconds is None else enc.encode_seconds
    t = time.perf_counter()
    rec = codec.decode(enc, setting)
    t_dec = time.perf_counter() - t
    if rec.size != img.size:
        raise RuntimeError(f"{codec.name} decoded {rec.size}, expected {img.size}")
    out = as_float_rgb(rec)
    ms = ms_ssim(out, ref) if ms_ssim_defined(img.width, img.height) else None
    row = {"codec": codec.key, "setting": codec.label(setting), "width": img.width,
           "height": img.height, "bytes": enc.num_bytes, "bpp": bpp(enc.num_bytes, img.width, img.height),
           "psnr-rgb": psnr(out, ref), "ms-ssim-rgb": ms,
           "ms-ssim-rgb-db": None if ms is None else ms_ssim_db(ms),
           "encoding_time": t_enc, "decoding_time": t_dec}
    return row, rec


@dataclass
class BenchResult:
    """Everything a run measured: per-image rows, and the first image's decodings (for crops)."""

    folder: str
    images: list[str]
    codecs: list[Codec]
    rows: list[dict]
    first: Image.Image | None = None
    decoded: dict = field(default_factory=dict)      # (codec key, setting label) -> RGB image
    notes: list[str] = field(default_factory=list)
    machine: str = ""


def run(files: Sequence[Path], codecs: Sequence[Codec], progress: bool = True) -> BenchResult:
    """Every codec at every setting on every image, with a progress bar on stderr."""
    from tqdm import tqdm
    res = BenchResult(folder=Path(files[0]).parent.name, images=[Path(f).name for f in files],
                      codecs=list(codecs), rows=[],
                      machine=f"{platform.machine()}, {os.cpu_count()} CPUs, "
                              f"torch {torch.get_num_threads()} threads")
    small = []
    kept = [c for c in codecs if isinstance(c, KeptCodec)]
    codecs = [c for c in codecs if not isinstance(c, KeptCodec)]
    total = len(files) * sum(len(c.settings) for c in codecs)
    with tqdm(total=total, desc="bench", file=sys.stderr, disable=None if progress else True,
              leave=False) as bar:
        for k, f in enumerate(files):
            img = load_image(f).convert("RGB")
            if not ms_ssim_defined(img.width, img.height):
                small.append(f"{Path(f).name} {img.width}x{img.height}")
            ref = as_float_rgb(img)
            if k == 0:
                res.first = img
            for c in codecs:
                for s in c.settings:
                    bar.set_postfix_str(f"{Path(f).name} {c.key} {c.label(s)}", refresh=False)
                    row, rec = measure(c, img, s, ref)
                    res.rows.append({"image": Path(f).name, **row})
                    if k == 0:
                        res.decoded[(c.key, row["setting"])] = rec
                    bar.update()
    for c in kept:
        res.rows += c.rows_for(res.images)
    if small:
        res.notes.append(f"MS-SSIM needs at least {MS_SSIM_MIN_SIDE} px on the short side (5 scales "
                         f"of an 11-px window); it is null for {len(small)} of {len(files)} images "
                         f"(e.g. {small[0]})")
    return res


def summarise(codec: Codec, rows: Sequence[dict]) -> list[dict]:
    """Mean measures per setting over the images, sorted by bpp. MS-SSIM dB is that of
    the mean MS-SSIM (as CompressAI plots it); MS-SSIM means skip images without one."""
    out = []
    for s in codec.settings:
        label = codec.label(s)
        r = [x for x in rows if x["codec"] == codec.key and x["setting"] == label]
        if not r:
            continue
        m = {"setting": label, "images": len(r)}
        for k in ("bpp", "psnr-rgb", "encoding_time", "decoding_time"):
            m[k] = sum(x[k] for x in r) / len(r)
        m["ms-ssim-rgb"] = mean_or_none(x["ms-ssim-rgb"] for x in r)
        m["ms-ssim-rgb-db"] = None if m["ms-ssim-rgb"] is None else ms_ssim_db(m["ms-ssim-rgb"])
        out.append(m)
    return sorted(out, key=lambda m: m["bpp"])


def compressai_json(codec: Codec, rows: Sequence[dict], meta: dict | None = None) -> dict:
    """CompressAI's results format (``name``, ``description``, ``results``: lists over
    settings sorted by bpp), plus ``settings`` and the ``per_image`` rows."""
    means = summarise(codec, rows)
    return {"name": codec.name, "description": codec.description,
            "results": {k: [m[k] for m in means] for k in METRICS},
            "settings": [m["setting"] for m in means], **(meta or {}),
            "per_image": [r for r in rows if r["codec"] == codec.key]}


def _pair(means: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(m["bpp"], m[key]) for m in means if m[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def bd_rates(summaries: dict[str, list[dict]], names: dict[str, str], test: str = "hvqc") -> dict:
    """BD-rate (%) of ``test`` against every other codec, for PSNR and for MS-SSIM in dB;
    None with a reason where it cannot be computed. Negative: ``test`` needs less rate."""
    out = {"test": test,
           "method": "Bjontegaard delta rate: log-rate interpolated as a PCHIP function of "
                     "quality over the quality interval both curves cover (dominated points "
                     f"dropped); negative = {test} needs less rate for the same quality",
           "quality": {"psnr": "psnr-rgb (dB)", "ms-ssim": "ms-ssim-rgb-db (dB of the mean MS-SSIM)"},
           "against": {}}
    if test not in summaries:
        out["note"] = f"{test} was not benchmarked: no BD-rates"
        return out
    for key, means in summaries.items():
        if key == test:
            continue
        entry = {}
        for metric, q in (("psnr", "psnr-rgb"), ("ms-ssim", "ms-ssim-rgb-db")):
            ra, qa = _pair(means, q)
            rt, qt = _pair(summaries[test], q)
            value = bd_rate(ra, qa, rt, qt)
            e = {"bd_rate": value}
            if value is None:
                ha, hq = rd_hull(ra, qa)[1], rd_hull(rt, qt)[1]
                if not qa or not qt:
                    e["reason"] = f"no {metric.upper()} values: images too small"
                elif len(ha) < 2 or len(hq) < 2:
                    e["reason"] = "fewer than two usable points on a curve"
                else:
                    e["reason"] = (f"curves do not overlap in {metric.upper()}: {names[test]} covers "
                                   f"{hq.min():.2f}-{hq.max():.2f} dB, {names[key]} "
                                   f"{ha.min():.2f}-{ha.max():.2f} dB")
            else:
                e["overlap_db"] = list(quality_overlap(rd_hull(ra, qa)[1], rd_hull(rt, qt)[1]))
            entry[metric] = e
        out["against"][key] = entry
    return out


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _json_bytes(obj) -> bytes:
    return (json.dumps(_clean(obj), indent=1, allow_nan=False) + "\n").encode()


def _rd_figure(res: BenchResult, summaries: dict[str, list[dict]], key: str, ylabel: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = 0
    for c in res.codecs:
        x, y = _pair(summaries[c.key], key)
        if x:
            hv = c.key.startswith("hvqc")
            ax.plot(x, y, "o-", lw=2.2 if hv else 1.2, ms=5 if hv else 3.5, label=c.name,
                    zorder=3 if hv else 2)
            drawn += 1
    if drawn:
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"not measured: images under {MS_SSIM_MIN_SIDE} px a side", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_xlabel("bits per pixel (whole file, log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{res.folder} ({len(res.images)} images), mean over images", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _crops_figure(res: BenchResult, size: int = 256) -> bytes:
    """The first image's centre crop: original, then each codec at the setting whose
    bpp on this image is closest (in log ratio) to hvqc level 1's."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    img, name = res.first, res.images[0]
    rows = [r for r in res.rows if r["image"] == name]
    ref = [r for r in rows if r["codec"] == "hvqc" and r["setting"] == "L1"]
    if ref:
        target, why = ref[0]["bpp"], "hvqc level 1"
    else:
        target, why = float(np.median([r["bpp"] for r in rows])), "the median of all settings"
    w, h = min(size, img.width), min(size, img.height)
    box = ((img.width - w) // 2, (img.height - h) // 2, (img.width - w) // 2 + w, (img.height - h) // 2 + h)
    panels = [("original", img.crop(box))]
    for c in res.codecs:
        if isinstance(c, KeptCodec):            # measured elsewhere: no decoded image here
            continue
        cand = [r for r in rows if r["codec"] == c.key]
        best = min(cand, key=lambda r: abs(math.log(r["bpp"] / target)))
        panels.append((f"{c.name} {best['setting']}\n{best['bpp']:.3f} bpp",
                       res.decoded[(c.key, best["setting"])].crop(box)))
    cols = min(len(panels), 4)
    nrow = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.2 * cols, (3.2 * h / w + 0.45) * nrow + 0.35), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    for i, (title, im) in enumerate(panels):
        ax = fig.add_subplot(nrow, cols, i + 1)
        ax.imshow(np.asarray(im), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{name}, {w}x{h} centre crop; each codec at the setting closest to "
                 f"{target:.3f} bpp ({why})", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _csv_bytes(rows: Sequence[dict]) -> bytes:
    cols = ["codec", "setting", "image", "width", "height", "bytes", *METRICS]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in cols])
    return buf.getvalue().encode()


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _summary_md(res: BenchResult, summaries: dict[str, list[dict]], bds: list[dict]) -> bytes:
    names = {c.key: c.name for c in res.codecs}
    lines = [f"# hvqc bench: {res.folder} ({len(res.images)} images)", "",
             f"Machine: {res.machine}. Rates are whole-file bits per pixel; PSNR and MS-SSIM on "
             f"8-bit RGB (MS-SSIM data_range 1), means over images.", ""]
    for c in res.codecs:
        lines += [f"## {c.name}", "", c.description, "",
                  "| setting | bpp | PSNR dB | MS-SSIM | MS-SSIM dB | encode s | decode s |",
                  "|---|---|---|---|---|---|---|"]
        for m in summaries[c.key]:
            lines.append(f"| {m['setting']} | {m['bpp']:.4f} | {_fmt(m['psnr-rgb'], '.2f')} | "
                         f"{_fmt(m['ms-ssim-rgb'], '.4f')} | {_fmt(m['ms-ssim-rgb-db'], '.2f')} | "
                         f"{m['encoding_time']:.3f} | {m['decoding_time']:.3f} |")
        lines.append("")
    for bd in bds:
        lines += [f"## BD-rate of {names.get(bd['test'], bd['test'])}", ""]
        if "note" in bd:
            lines += [bd["note"], ""]
        elif bd["against"]:
            lines += [bd["method"] + ".", "", "| against | PSNR | MS-SSIM (dB) |", "|---|---|---|"]
            for key, e in bd["against"].items():
                cells = [f"{e[m]['bd_rate']:+.1f} %" if e[m]["bd_rate"] is not None
                         else f"n/a ({e[m]['reason']})" for m in ("psnr", "ms-ssim")]
                lines.append(f"| {names[key]} | {cells[0]} | {cells[1]} |")
            lines.append("")
        else:
            lines += ["No other codec to compare with.", ""]
    if res.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in res.notes] + [""]
    return "\n".join(lines).encode()


def write_outputs(res: BenchResult, folder: Path,
                  write: Callable[[Path, Callable], None] | None = None) -> list[Path]:
    """Write every output into ``folder`` (which must exist); returns the paths written.

    Args:
        res: a finished :func:`run`.
        folder: the results folder.
        write: ``write(path, fn)`` calls ``fn(binary_file)``; default a plain open, the
            CLI passes its atomic writer.
    """
    def plain(path: Path, fn) -> None:
        with open(path, "wb") as f:
            fn(f)
    write = write or plain
    summaries = {c.key: summarise(c, res.rows) for c in res.codecs}
    names = {c.key: c.name for c in res.codecs}
    meta = {"images": res.folder, "count": len(res.images), "machine": res.machine}
    bd = bd_rates(summaries, names)
    if res.notes:
        bd["notes"] = res.notes
    bds = [bd] + [bd_rates(summaries, names, key) for key in summaries
                  if key in ("hvqc-search", "hvqc-rd", "hvqc-rd-search")]
    outputs = {f"{c.key}.json": _json_bytes(compressai_json(c, res.rows, meta)) for c in res.codecs}
    outputs["results.csv"] = _csv_bytes(res.rows)
    outputs["rd_psnr.png"] = _rd_figure(res, summaries, "psnr-rgb", "PSNR (dB, RGB)")
    outputs["rd_msssim.png"] = _rd_figure(res, summaries, "ms-ssim-rgb-db",
                                          "MS-SSIM (dB: -10 log10(1 - MS-SSIM), RGB)")
    outputs["crops.png"] = _crops_figure(res)
    for b in bds:
        outputs["bd_rate.json" if b is bd else f"bd_rate-{b['test']}.json"] = _json_bytes(b)
    outputs["summary.md"] = _summary_md(res, summaries, bds)
    paths = []
    for name, data in outputs.items():
        write(folder / name, lambda f, data=data: f.write(data))
        paths.append(folder / name)
    return paths


_CODEC_KEYS = {"name", "description", "results", "per_image", "machine"}   # compressai_json
_BD_KEYS = {"test", "method", "against"}                                    # bd_rates


def stale_outputs(folder: Path, written: Sequence[Path]) -> list[Path]:
    """Results files of an earlier bench in ``folder`` that this one did not rewrite: a
    codec's JSON or a BD-rate table from a run with other codecs or peers, which would
    otherwise sit beside the new results as if they were part of them. Only files whose
    content is one of this module's JSON outputs are named; anything else is left alone."""
    keep = {Path(p).name for p in written}
    stale = []
    for path in sorted(Path(folder).glob("*.json")):
        if path.name in keep or not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(doc, dict) and (_CODEC_KEYS <= doc.keys() or _BD_KEYS <= doc.keys()):
            stale.append(path)
    return stale
