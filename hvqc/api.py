"""The Python API: ``compress(image) -> bytes`` and ``decompress(bytes) -> PIL.Image``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from . import bitstream
from .codec import compress_image, compress_image_rd, compress_image_to, decompress_image, recode
from .image import MAX_IMAGE_PIXELS, check_size, load_image, normalise_mode
from .search import SearchSettings
from .zoo import DEFAULT_MODEL, LoadedModel, load

__all__ = ["compress", "decompress", "describe", "compress_file", "truncate", "MAX_ENCODE_PIXELS"]

MAX_ENCODE_PIXELS = MAX_IMAGE_PIXELS   # about 6 GB of activations at the finest level


@dataclass
class FileResult:
    data: bytes
    level: int
    bpp: float
    note: str = ""
    groups: int = 0      # a refinement of ``level`` by its first coding groups (0: whole level)


def _image(image) -> Image.Image:
    if isinstance(image, (str, Path)):
        img = load_image(image, MAX_ENCODE_PIXELS)
    else:
        img = normalise_mode(ImageOps.exif_transpose(image))
    check_size(img.width, img.height, MAX_ENCODE_PIXELS)
    return img


def _search(search: int | SearchSettings) -> SearchSettings:
    return search if isinstance(search, SearchSettings) else SearchSettings(steps=search)


def compress_file(image, lm: LoadedModel, level: int | None = None,
                  bpp: float | None = None, joint: bool | None = None,
                  search: int | SearchSettings = 0, lam: float | None = None) -> FileResult:
    """Code an image at ``level`` (default 1), or at the finest level or refinement
    between levels (:func:`hvqc.codec.compress_image_to`) whose whole file fits ``bpp``,
    or at the level or refinement that minimises ``distortion + lam * bpp``
    (:func:`hvqc.codec.compress_image_rd`); ``search`` steps (or settings) of the
    encoder's search (:mod:`hvqc.search`) for the codes of that level (with ``bpp``: of
    the cut chosen, level or refinement; with ``lam``: of every level, for its own cuts,
    with the rate weight ``lam``)."""
    if sum(v is not None for v in (level, bpp, lam)) > 1:
        raise ValueError("give only one of level or bpp or lam")
    search = _search(search)
    img = _image(image)
    pixels = img.width * img.height
    if lam is not None:
        data, lv, groups = compress_image_rd(lm, img, lam, joint, search)
        return FileResult(data, lv, 8 * len(data) / pixels, "", groups)
    if bpp is None:
        lv = level if level is not None else 1
        data = compress_image(lm, img, lv, joint, search=search).data
        return FileResult(data, lv, 8 * len(data) / pixels)
    data, lv, groups, note = compress_image_to(lm, img, bpp, joint, search)
    return FileResult(data, lv, 8 * len(data) / pixels, note, groups)


def compress(image, model: str | LoadedModel = DEFAULT_MODEL, level: int | None = None,
             bpp: float | None = None, joint: bool | None = None,
             search: int | SearchSettings = 0, lam: float | None = None) -> bytes:
    """Compress an image (path or ``PIL.Image``) into ``.hvqc`` bytes.

    Args:
        image: a file path or a PIL image of any mode.
        model: a model name or a loaded model.
        level: finest level to transmit (1 = best quality); default 1.
        bpp: alternatively a target rate: the finest level, or refinement between two
            levels, at or below it is chosen.
        lam: alternatively a rate-distortion slope: the level or refinement with the
            least ``distortion + lam * bpp`` is chosen (distortion: the codec's training
            distortion, (1 - MS-SSIM) + 10 MSE, of the decoded image); each level and
            refinement is decoded once to score it.
        joint: code all levels in one stream (smaller for tiny images; cut only with
            the model). Default: the model's choice (``hvqc models``).
        search: steps of the encoder's search for better codes (:mod:`hvqc.search`;
            about 10 is enough, each step costing about one plain encode), or its
            settings; 0 (default) sends the encoder's codes.
    """
    lm = load(model) if isinstance(model, str) else model
    return compress_file(image, lm, level, bpp, joint, search, lam).data


def decompress(data: bytes, level: int | None = None, model: LoadedModel | None = None) -> Image.Image:
    """Decode ``.hvqc`` bytes to a PIL image of the original size and mode family."""
    return decompress_image(bytes(data), model, level)


def describe(data: bytes) -> dict:
    """The header of a file as a JSON-able dict; loads no model."""
    c = bitstream.read(data)
    h, lengths = c.header, [len(seg) for seg in c.segments]
    payload, extra = sum(lengths), sum(len(v) for v in c.extras.values())
    per_level = [None] * len(h.levels) if h.joint else lengths   # a joint stream has no split
    out = {"model": h.model, "weights_hash": h.weights_hash.hex(), "width": h.width,
            "height": h.height, "mode": h.mode, "num_levels": h.num_levels,
            "modality": ["image", "speech"][h.modality], "stream": "joint" if h.joint else "split",
            "groups": h.groups, "colour_bytes": len(c.extras.get(bitstream.COLOUR_TAG, b"")),
            "levels": [{"level": l, "payload_bytes": n} for l, n in zip(h.levels, per_level)],
            "payload_bytes": payload, "extra_bytes": extra, "total_bytes": len(data),
            "header_bytes": len(data) - payload - extra, "bpp": 8 * len(data) / (h.width * h.height)}
    if h.modality == 1:     # speech: width counts 10 ms frames; extras tag 2 the samples
        raw = c.extras.get(bitstream.SPEECH_SAMPLES_TAG, b"")
        samples = int.from_bytes(raw, "little") if len(raw) == 4 else None
        seconds = samples / h.sample_rate if samples else None
        out.update({"frames": h.width, "sample_rate": h.sample_rate, "samples": samples,
                    "seconds": seconds, "bps": 8 * len(data) / seconds if seconds else None})
        del out["bpp"]
    return out


def truncate(data: bytes, level: int) -> bytes:
    """Drop the levels finer than ``level``: split files without a model, joint files
    by re-coding with the model they name (the same bytes as encoding at ``level``, but
    for that encode's colour correction, which describes one cut: a cut file has none)."""
    return recode(bytes(data), level)
