"""Process-wide settings for a process that runs hvqc's work: the command line and the
benchmarks apply them at start. A library import changes nothing."""
from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4     # glibc's mallopt parameters (malloc.h)


def tune_allocator() -> bool:
    """Keep freed memory in the process for reuse (glibc only; elsewhere a no-op).

    glibc serves each large allocation with a fresh ``mmap`` and returns it on free, so
    the big temporary buffers of PyTorch's CPU kernels (float64 convolutions above all:
    every call's unfolded input) are page-faulted in again on every call. Serving them
    from the heap and not trimming it (what ``MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=...`` does from the environment) made a level-1 Kodak encode
    about 15 % faster here, a VQ training step about 2x. The cost: the heap keeps its
    peak size until the process ends.

    Returns whether the settings were applied.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt        # the C library the process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
