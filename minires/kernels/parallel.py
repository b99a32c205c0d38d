"""A small fork-join helper for CPU kernels: split a batch across threads.

NumPy runs elementwise work and copies on one core, and OpenBLAS splits each GEMM across
its own threads, which costs a synchronisation per call and degrades badly when the
cores are shared with other processes. The fast CPU kernels therefore split the *batch*
instead: :func:`parallel_for` runs ``fn(lo, hi)`` on ``num_threads`` contiguous ranges at
once (NumPy releases the GIL inside copies, ufuncs and BLAS calls), with OpenBLAS switched
to one thread for the duration, so both the copies and the GEMMs of different images run
side by side without any BLAS-internal synchronisation.

The thread count is the setting ``num_threads`` of :mod:`minires.config` (``MINIRES_NUM_THREADS``,
default the number of CPUs); :func:`set_num_threads` sets it (1 turns the pool off and leaves
OpenBLAS as it is). :func:`for_each_chunk` and :func:`sum_over_chunks` walk each thread's
share in cache-sized chunks, and :func:`scratch` hands each thread its reused work arrays.
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

from .. import config

_pool: ThreadPoolExecutor | None = None
_pool_threads = 0
_pool_lock = threading.Lock()
_state = threading.local()


def get_num_threads() -> int:
    """How many threads :func:`parallel_for` uses (``minires.config.get('num_threads')``)."""
    return config.get("num_threads")


def set_num_threads(n: int) -> None:
    """Set how many threads :func:`parallel_for` uses (>= 1; 1 runs everything inline).

    Raises:
        ValueError: ``n`` is not a positive int.
    """
    if isinstance(n, str):   # (config accepts the environment's strings; this function wants an int)
        raise ValueError(f"set_num_threads: expected a positive int, got {n!r}")
    config.set(num_threads=n)


def _get_pool(threads: int) -> ThreadPoolExecutor:
    """The worker pool for ``threads`` threads in all (the caller's thread is one of them)."""
    global _pool, _pool_threads
    with _pool_lock:
        if _pool is None or _pool_threads != threads:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max_workers=max(1, threads - 1), thread_name_prefix="minires")
            _pool_threads = threads
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


def set_blas_threads(count: int) -> None:
    """Set OpenBLAS's own thread count (for the matrix products); a no-op without OpenBLAS."""
    if _blas_set is not None:
        with _blas_lock:
            _blas_set(int(count))


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
    threads = config.get("num_threads")
    parts = min(threads, most)
    bounds = None if parts <= 1 or getattr(_state, "inside", False) else _piece_bounds(total, parts, most, grain)
    if bounds is None:
        return [fn(0, total)]
    return _run_pieces(fn, bounds, min(parts, len(bounds) - 1), threads)


def _piece_bounds(total: int, parts: int, most: int, grain: int | None) -> list | None:
    """The piece boundaries of :func:`parallel_for` (``None``: one piece, run inline)."""
    if grain is not None and grain >= 1:
        units = -(-total // grain)
        grain *= -(-units // (parts * _MAX_GRAIN_PIECES_PER_THREAD))   # merge grains past the cap
        pieces = -(-total // grain)
        return None if pieces <= 1 else [min(total, i * grain) for i in range(pieces + 1)]
    pieces = min(parts * _PIECES_PER_THREAD, most)
    return [total * i // pieces for i in range(pieces + 1)]


def _run_pieces(fn, bounds: list, parts: int, threads: int) -> list:
    """Run ``fn`` on every piece ``bounds[i]:bounds[i + 1]`` on ``parts`` threads, the caller's one included."""
    pieces = len(bounds) - 1
    results = [None] * pieces
    claim = itertools.count()       # next() is atomic under the GIL
    failed = []
    pool = _get_pool(threads)

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


def chunk_length(total: int, item_bytes: int, target_bytes: int) -> int:
    """How many items of ``item_bytes`` make a chunk of about ``target_bytes`` (1 to ``total``)."""
    return int(max(1, min(total, target_bytes // max(item_bytes, 1))))


def for_each_chunk(fn, total: int, chunk: int) -> None:
    """Call ``fn(lo, hi)`` for every chunk ``[lo, hi)`` of ``chunk`` items covering ``range(total)``.

    The chunks are shared out to the threads of :func:`parallel_for` in whole chunks (only
    the last chunk of ``range(total)`` is shorter); ``fn`` must write disjoint outputs.
    """
    def run(start, stop):
        for lo in range(start, stop, chunk):
            fn(lo, min(lo + chunk, stop))

    parallel_for(run, total, grain=chunk)


def sum_over_chunks(fn, total: int, chunk: int, shape, dtype):
    """Like :func:`for_each_chunk`, where ``fn(lo, hi, acc)`` adds its chunk's part into ``acc``.

    Each thread's pieces accumulate into their own ``acc = zeros(shape, dtype)``, and the
    pieces' sums are added in range order (:func:`parallel_sum`): the result does not depend
    on thread timing.
    """
    def run(start, stop):
        acc = np.zeros(shape, dtype)
        for lo in range(start, stop, chunk):
            fn(lo, min(lo + chunk, stop), acc)
        return acc

    return parallel_sum(run, total, grain=chunk)


# --- per-thread scratch arrays ---------------------------------------------------------------

_scratch = threading.local()
#: scratch arrays kept per thread before the store is emptied (many shapes seen: forget, not grow)
_SCRATCH_LIMIT = 128


def scratch(tag: str, shape: tuple, dtype, zero: bool = False) -> np.ndarray:
    """This thread's reused work array for ``(tag, shape, dtype)`` (threads never share one).

    With ``zero`` it is zero-filled when made; callers that rely on its zeros (a padding
    border, a block of zeros) never write there. Other contents are whatever the last
    user left.
    """
    store = getattr(_scratch, "store", None)
    if store is None:
        store = _scratch.store = {}
    key = (tag, shape, np.dtype(dtype).str)
    array = store.get(key)
    if array is None:
        if len(store) >= _SCRATCH_LIMIT:
            store.clear()
        array = store[key] = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    return array


def clear_scratch() -> None:
    """Free this thread's scratch arrays (they are made again on the next use)."""
    getattr(_scratch, "store", {}).clear()


__all__ = ["parallel_for", "parallel_sum", "for_each_chunk", "sum_over_chunks", "chunk_length", "scratch",
           "clear_scratch", "get_num_threads", "set_num_threads", "openblas_info"]
