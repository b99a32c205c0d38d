"""The fork-join helper of the fast CPU kernels (minires/kernels/parallel.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from minires.kernels import parallel


@pytest.fixture
def two_threads():
    previous = parallel.get_num_threads()
    parallel.set_num_threads(2)
    yield
    parallel.set_num_threads(previous)


def test_ranges_cover_the_total_once_in_order(two_threads):
    seen = []
    lock = threading.Lock()

    def fn(lo, hi):
        with lock:
            seen.append((lo, hi))
        return hi - lo

    results = parallel.parallel_for(fn, 11)
    pieces = 2 * parallel._PIECES_PER_THREAD
    assert len(results) == pieces and sum(results) == 11
    assert results == [11 * (i + 1) // pieces - 11 * i // pieces for i in range(pieces)]   # in range order
    covered = sorted(i for lo, hi in seen for i in range(lo, hi))
    assert covered == list(range(11))


def test_a_late_or_slow_thread_leaves_the_pieces_to_the_other(two_threads, monkeypatch):
    import time
    monkeypatch.setattr(parallel, "_PIECES_PER_THREAD", 4)
    main = threading.get_ident()
    by = {}

    def fn(lo, hi):
        by[lo] = threading.get_ident()
        if threading.get_ident() != main:
            time.sleep(0.2)        # the pool thread is slow: the caller must take the rest
        return lo

    assert parallel.parallel_for(fn, 80) == [0, 10, 20, 30, 40, 50, 60, 70]
    assert sum(1 for ident in by.values() if ident == main) >= 6


def test_parallel_writes_equal_serial(two_threads):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((9, 17, 5)).astype(np.float32)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    out = np.empty((9, 17, 3), np.float32)

    def fn(lo, hi):
        np.matmul(a[lo:hi], w, out=out[lo:hi])

    parallel.parallel_for(fn, 9)
    np.testing.assert_allclose(out, a @ w, rtol=1e-6, atol=1e-6)


def test_small_totals_and_one_thread_run_inline(two_threads):
    main = threading.get_ident()
    idents = []
    parallel.parallel_for(lambda lo, hi: idents.append(threading.get_ident()), 3, min_per_thread=4)
    assert idents == [main]
    parallel.set_num_threads(1)
    idents.clear()
    assert parallel.parallel_for(lambda lo, hi: idents.append((lo, hi)), 100) == [None]
    assert idents == [(0, 100)]


def test_nested_calls_run_inline(two_threads):
    def inner(lo, hi):
        return parallel.parallel_for(lambda a, b: (a, b), 10)

    results = parallel.parallel_for(inner, 4)
    # inside a parallel region (either thread) nothing fans out again
    assert results == [[(0, 10)]] * len(results) and len(results) >= 2


def test_errors_propagate_after_all_threads_stop(two_threads):
    finished = []

    def fn(lo, hi):
        if lo == 0:
            raise KeyError("boom")
        finished.append(lo)

    with pytest.raises(KeyError, match="boom"):
        parallel.parallel_for(fn, 10)
    pieces = 2 * parallel._PIECES_PER_THREAD
    assert set(finished) <= {10 * i // pieces for i in range(1, pieces)}


def test_blas_thread_count_is_restored(two_threads):
    if parallel._blas_get is None:
        pytest.skip("OpenBLAS thread control not found")
    before = parallel._blas_get()
    inside = []
    parallel.parallel_for(lambda lo, hi: inside.append(parallel._blas_get()), 10)
    assert inside == [1] * (2 * parallel._PIECES_PER_THREAD)
    assert parallel._blas_get() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_refuses_bad_values(bad):
    with pytest.raises(ValueError, match="positive int"):
        parallel.set_num_threads(bad)
