"""A small fork-join helper for CPU kernels: split a batch across threads.

NumPy runs elementwise work and copies on one core, and OpenBLAS splits each GEMM across
its own threads, which costs a synchronisation per call and degrades badly when the
cores are shared with other processes. The fast CPU kernels therefore split the *batch*
instead: :func:`parallel_for` runs ``fn(lo, hi)`` on ``num_threads`` contiguous ranges at
once (NumPy releases the GIL inside copies, ufuncs and BLAS calls), with OpenBLAS switched
to one thread for the duration, so both the copies and the GEMMs of different images run
side by side without any BLAS-internal synchronisation.

The thread count defaults to ``MINIRES_NUM_THREADS`` or the number of CPUs; set it with
:func:`set_num_threads` (1 turns the pool off and leaves OpenBLAS as it is).
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np


def _default_threads() -> int:
    env = os.environ.get("MINIRES_NUM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return max(1, os.cpu_count() or 1)


_num_threads = _default_threads()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_state = threading.local()


def get_num_threads() -> int:
    """How many threads :func:`parallel_for` uses."""
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set how many threads :func:`parallel_for` uses (>= 1; 1 runs everything inline).

    Raises:
        ValueError: ``n`` is not a positive int.
    """
    global _num_threads, _pool
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive int, got {n!r}")
    with _pool_lock:
        _num_threads = n
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, _num_threads - 1), thread_name_prefix="minires")
        return _pool


# --- OpenBLAS thread control (optional: found through ctypes, skipped when absent) -----------

class _OpenBlas(NamedTuple):
    """NumPy's OpenBLAS as found by :func:`_find_openblas` (all None when not found)."""

    path: str | None
    set_num_threads: Callable[[int], None] | None
    get_num_threads: Callable[[], int] | None
    get_corename: Callable[[], bytes] | None  # None also where the build lacks it


def _find_openblas() -> _OpenBlas:
    """Load the OpenBLAS bundled with NumPy (``numpy.libs``) and look up its thread and core functions.

    Symbols carry the prefix ``scipy_openblas_`` (NumPy 2 wheels) or ``openblas_`` and the
    suffix ``64_`` (ILP64 builds) or none; the first library with both thread functions wins.
    """
    libdir = os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if setter is None or getter is None:
                    continue
                setter.argtypes = [ctypes.c_int]
                setter.restype = None
                getter.restype = ctypes.c_int
                corename = getattr(lib, f"{prefix}get_corename{suffix}", None)
                if corename is not None:
                    corename.restype = ctypes.c_char_p
                return _OpenBlas(os.path.realpath(path), setter, getter, corename)
    return _OpenBlas(None, None, None, None)


def openblas_info() -> dict:
    """Which OpenBLAS NumPy uses, its kernel and its current thread count.

    Returns:
        ``{"path": str, "core": str, "threads": int}``: the library's real path, the
        kernel OpenBLAS chose for this CPU (``openblas_get_corename``, e.g. ``'Haswell'``)
        and how many threads it uses now (1 inside :func:`parallel_for`). A field is None
        where it is unknown: all three when NumPy's bundled OpenBLAS is not found (another
        BLAS, or a NumPy built against a system library), ``core`` alone when the build
        has no ``get_corename``.
    """
    found = _openblas
    core = found.get_corename() if found.get_corename is not None else None
    return {"path": found.path,
            "core": core.decode() if core is not None else None,
            "threads": int(found.get_num_threads()) if found.get_num_threads is not None else None}


_openblas = _find_openblas()
_blas_set, _blas_get = _openblas.set_num_threads, _openblas.get_num_threads
_blas_lock = threading.Lock()


class _SingleThreadedBlas:
    """Context: OpenBLAS uses one thread inside (restored afterwards); a no-op without OpenBLAS."""

    def __enter__(self):
        self.previous = None
        if _blas_set is not None:
            with _blas_lock:
                self.previous = _blas_get()
                if self.previous != 1:
                    _blas_set(1)
        return self

    def __exit__(self, *exc):
        if self.previous is not None and self.previous != 1:
            with _blas_lock:
                _blas_set(self.previous)
        return False


#: pieces per thread: threads take the next piece of the range as they finish one, so a
#: thread that starts late (a pool thread needs a wake-up and the GIL) or runs slower
#: does not leave the other waiting at the join for half the work
_PIECES_PER_THREAD = 2


#: with a ``grain``, at most this many pieces per thread (grains are merged beyond it)
_MAX_GRAIN_PIECES_PER_THREAD = 8


def parallel_for(fn, total: int, min_per_thread: int = 1, grain: int | None = None) -> list:
    """Run ``fn(lo, hi)`` over contiguous ranges covering ``range(total)``, in parallel.

    The range is cut into up to ``_PIECES_PER_THREAD`` pieces per thread, each at least
    ``min_per_thread`` long (so tiny problems run inline); with ``grain``, into pieces of
    whole grains instead (the caller's chunk, e.g. the images that fit its cache block,
    so no piece ends in a small remainder chunk; at most ``_MAX_GRAIN_PIECES_PER_THREAD``
    per thread). The threads take pieces in order as they become free. A call from inside
    a worker runs inline too (no nested pools). The first exception raised by any piece is
    re-raised (after all threads stopped).

    Args:
        fn: ``fn(lo, hi) -> result`` (it must only write to disjoint parts of shared arrays).
        total: the length of the index range.
        min_per_thread: smallest range worth a piece.
        grain: pieces are multiples of this many indices (the last one shorter).

    Returns:
        The results of ``fn`` in range order (one per piece; how many pieces there are
        depends on the thread count and ``total``, never on timing).
    """
    most = max(1, total // max(1, min_per_thread))
    parts = min(_num_threads, most)
    if parts <= 1 or getattr(_state, "inside", False):
        return [fn(0, total)]
    if grain is not None and grain >= 1:
        units = -(-total // grain)
        grain *= -(-units // (parts * _MAX_GRAIN_PIECES_PER_THREAD))   # merge grains past the cap
        pieces = -(-total // grain)
        if pieces <= 1:
            return [fn(0, total)]
        bounds = [min(total, i * grain) for i in range(pieces + 1)]
    else:
        pieces = min(parts * _PIECES_PER_THREAD, most)
        bounds = [total * i // pieces for i in range(pieces + 1)]
    results = [None] * pieces
    claim = itertools.count()       # next() is atomic under the GIL
    failed = []
    pool = _get_pool()

    def run():
        _state.inside = True
        try:
            while not failed:
                i = next(claim)
                if i >= pieces:
                    return
                results[i] = fn(bounds[i], bounds[i + 1])
        except BaseException as error:  # noqa: BLE001 - re-raised below, in the caller's thread
            failed.append(error)
        finally:
            _state.inside = False

    with _SingleThreadedBlas():
        futures = [pool.submit(run) for _ in range(1, parts)]
        try:
            run()
        finally:
            for f in futures:   # waits for all before BLAS threads come back
                f.result()
    if failed:
        raise failed[0]
    return results


def parallel_sum(fn, total: int, min_per_thread: int = 1, grain: int | None = None):
    """The sum of the partial results of :func:`parallel_for` (each ``fn(lo, hi)`` returns a
    new array), added in range order, so the sum does not depend on thread timing."""
    parts = parallel_for(fn, total, min_per_thread, grain)
    result = parts[0]
    for part in parts[1:]:
        result += part
    return result


__all__ = ["parallel_for", "parallel_sum", "get_num_threads", "set_num_threads", "openblas_info"]
