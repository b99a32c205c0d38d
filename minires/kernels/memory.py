"""Keep freed array memory inside the process, so large arrays are not page-faulted anew.

A training step allocates every activation and gradient afresh (NumPy arrays of several
MiB each) and frees them at the end of the backward pass. With glibc's default settings
the freed top of the heap is returned to the operating system (``M_TRIM_THRESHOLD``) and
arrays above the mmap threshold get fresh pages, so each step touches its memory anew
(tens of thousands of page faults per CIFAR ResNet-20 step, benchmarks/RESULTS.md).
:func:`tune_malloc` raises both thresholds,
so the memory of one step is reused by the next (the peak RSS is unchanged; the process
keeps up to ``trim_threshold`` bytes of free heap instead of returning them). PyTorch's
CPU allocator and most deep-learning runtimes keep freed blocks for the same reason.

Importing minires changes nothing: :func:`tune_malloc_once` applies it on first use, when
the first convolution runs (:func:`minires.kernels.conv.conv2d_forward`), on Linux with
glibc only. The setting ``malloc_tuning`` of :mod:`minires.config` (environment variable
``MINIRES_MALLOC_TUNING=0``) leaves the allocator alone; a program may also call
:func:`tune_malloc` itself, earlier.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from .. import config

# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_tuned = False
_decided = False


def tune_malloc(trim_threshold: int = 1 << 30, mmap_threshold: int = 256 << 20) -> bool:
    """Raise glibc's trim and mmap thresholds (see the module docstring).

    Args:
        trim_threshold: free bytes at the top of the heap kept rather than returned.
        mmap_threshold: allocations at least this large still get their own mapping.

    Returns:
        True when both settings were applied (Linux/glibc), False otherwise.
    """
    global _tuned
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    _tuned = _tuned or ok
    return ok


def malloc_tuned() -> bool:
    """Whether :func:`tune_malloc` has been applied in this process."""
    return _tuned


def tune_malloc_once() -> None:
    """Apply :func:`tune_malloc` the first time this is called, unless ``config`` ``malloc_tuning`` is off."""
    global _decided
    if not _decided:
        wanted = config.get("malloc_tuning")     # (an invalid MINIRES_MALLOC_TUNING raises here, every time)
        _decided = True
        if wanted:
            tune_malloc()


__all__ = ["tune_malloc", "malloc_tuned", "tune_malloc_once"]
