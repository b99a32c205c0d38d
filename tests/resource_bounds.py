"""Measuring that a hostile file is refused cheaply: memory traced with tracemalloc, CPU time.

The readers are designed to refuse before allocating, so the bounds here are far above
what a refusal costs (a few MB, milliseconds) and far below what the unbounded readers
took (gigabytes, tens of seconds). CPU time, not wall time, keeps the check robust on a
loaded machine; NumPy reports its array allocations to tracemalloc, so arrays count.
"""

import time
import tracemalloc

import pytest

MAX_MB = 100
MAX_CPU_SECONDS = 2.0


def assert_refused_cheaply(call, error, match, max_mb=MAX_MB, max_cpu=MAX_CPU_SECONDS):
    """``call()`` must raise ``error`` matching ``match`` using < ``max_mb`` MB and < ``max_cpu`` s of CPU.

    Returns:
        The exception info.
    """
    tracemalloc.start()
    start = time.process_time()
    try:
        with pytest.raises(error, match=match) as info:
            call()
    finally:
        cpu = time.process_time() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < max_mb * 2**20, f"refusing took {peak / 2**20:.0f} MB (bound {max_mb} MB)"
    assert cpu < max_cpu, f"refusing took {cpu:.2f} s of CPU (bound {max_cpu} s)"
    return info
