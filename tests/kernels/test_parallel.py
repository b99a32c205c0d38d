"""The fork-join helper of the fast CPU kernels (minires/kernels/parallel.py)."""

from __future__ import annotations

import os
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


def test_set_blas_threads_sets_openblas_and_is_a_no_op_without_it(monkeypatch):
    if parallel._blas_get is None:
        pytest.skip("OpenBLAS thread control not found")
    before = parallel._blas_get()
    try:
        parallel.set_blas_threads(1)
        assert parallel.openblas_info()["threads"] == 1
        parallel.set_blas_threads(2)
        assert parallel.openblas_info()["threads"] == min(2, os.cpu_count())
    finally:
        parallel.set_blas_threads(before)
    monkeypatch.setattr(parallel, "_blas_set", None)
    parallel.set_blas_threads(1)  # no OpenBLAS: nothing to set, no error
    assert parallel._blas_get() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_refuses_bad_values(bad):
    with pytest.raises(ValueError, match="positive int"):
        parallel.set_num_threads(bad)


def _bundled_openblas():
    import glob  # noqa: PLC0415
    import os  # noqa: PLC0415

    libdir = os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs")
    return sorted(glob.glob(os.path.join(libdir, "*openblas*")))


def test_openblas_info_names_numpys_bundled_library():
    info = parallel.openblas_info()
    assert set(info) == {"path", "core", "threads"}
    if not _bundled_openblas():
        pytest.skip("this NumPy has no bundled OpenBLAS in numpy.libs")
    assert info["path"] is not None and os.path.samefile(info["path"], _bundled_openblas()[0])
    assert isinstance(info["core"], str) and info["core"]  # e.g. 'Haswell', 'SkylakeX'
    assert isinstance(info["threads"], int) and info["threads"] >= 1
    assert info["threads"] == parallel._blas_get()


def test_openblas_info_reports_the_current_thread_count(two_threads):
    if parallel._blas_get is None:
        pytest.skip("OpenBLAS thread control not found")
    seen = parallel.parallel_for(lambda lo, hi: parallel.openblas_info()["threads"], 10)
    assert seen == [1] * len(seen)  # parallel_for runs BLAS single-threaded inside
    assert parallel.openblas_info()["threads"] == parallel._blas_get()


def test_openblas_info_without_openblas_has_none_fields(monkeypatch):
    monkeypatch.setattr(parallel, "_openblas", parallel._OpenBlas(None, None, None, None))
    assert parallel.openblas_info() == {"path": None, "core": None, "threads": None}


def test_speed_benchmark_reports_openblas_through_the_shared_helper():
    import importlib.util  # noqa: PLC0415

    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "speed.py")
    spec = importlib.util.spec_from_file_location("speed_for_test", path)
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)  # imports only; main() is behind __name__ == "__main__"
    record = speed._openblas_info()
    info = parallel.openblas_info()
    assert record["numpy"] == np.__version__
    assert record["openblas"] == (None if info["path"] is None else os.path.basename(info["path"]))
    assert record["openblas_core"] == info["core"]
    assert record["openblas_threads"] == info["threads"]


def test_grain_cuts_pieces_at_whole_grains(two_threads, monkeypatch):
    seen = []
    lock = threading.Lock()

    def fn(lo, hi):
        with lock:
            seen.append((lo, hi))
        return (lo, hi)

    # 23 indices in grains of 5: pieces 0-5, 5-10, ..., 20-23, in range order
    assert parallel.parallel_for(fn, 23, grain=5) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    assert sorted(seen) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    # more grains than the cap: merged into whole multiples of the grain
    monkeypatch.setattr(parallel, "_MAX_GRAIN_PIECES_PER_THREAD", 2)
    pieces = parallel.parallel_for(fn, 100, grain=3)
    assert len(pieces) <= 4 and pieces[0][0] == 0 and pieces[-1][1] == 100
    assert all(lo % 3 == 0 and (hi - lo) % 3 == 0 for lo, hi in pieces[:-1])
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    # a single grain runs inline
    main = threading.get_ident()
    idents = []
    parallel.parallel_for(lambda lo, hi: idents.append(threading.get_ident()), 7, grain=10)
    assert idents == [main]


def test_parallel_sum_adds_the_pieces_in_range_order(two_threads):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((37, 5))
    total = parallel.parallel_sum(lambda lo, hi: a[lo:hi].sum(axis=0), 37, grain=4)
    # the same sum, piece by piece in range order: bit for bit, whatever the thread timing
    expected = a[0:4].sum(axis=0)
    for lo in range(4, 37, 4):
        expected = expected + a[lo:lo + 4].sum(axis=0)
    np.testing.assert_array_equal(total, expected)
    assert parallel.parallel_sum(lambda lo, hi: np.array([hi - lo]), 3, min_per_thread=4).tolist() == [3]
