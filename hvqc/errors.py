"""Map exceptions to the one-line messages users see; None means "a bug, not the user"."""
from __future__ import annotations

from PIL import Image, UnidentifiedImageError

from .bitstream import FormatError
from .entropy import CoderError
from .zoo import ModelError

__all__ = ["user_message"]


def user_message(e: BaseException) -> str | None:
    if isinstance(e, (FormatError, ModelError, CoderError)):
        return str(e)
    if isinstance(e, UnidentifiedImageError):
        return "not an image file Pillow can read"
    if isinstance(e, Image.DecompressionBombError):
        return f"image too large: {e}"
    if isinstance(e, FileNotFoundError):
        return f"no such file: {e.filename or e}"
    if isinstance(e, IsADirectoryError):
        return f"is a folder: {e.filename}"
    if isinstance(e, PermissionError):
        return f"permission denied: {e.filename}"
    if isinstance(e, MemoryError):
        return "out of memory"
    if isinstance(e, (ValueError, OSError, KeyError)):
        return str(e).strip("'\"") or type(e).__name__
    return None
