"""glibc malloc tuning (minires/kernels/memory.py): nothing at import, applied at the first convolution
unless opted out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from minires.kernels import memory

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")


_FIRST_CONVOLUTION = ("import minires.functional as F\n"
                      "F.conv2d(minires.randn(1, 1, 3, 3), minires.randn(1, 1, 1, 1))\n")


@linux_only
def test_import_changes_nothing():
    code = "import minires, minires.nn, minires.models, minires.kernels.memory as m; print(m.malloc_tuned())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


@linux_only
def test_first_convolution_tunes_malloc_and_big_arrays_stop_faulting():
    code = (
        "import resource, numpy as np, minires.kernels.memory as m, minires\n" + _FIRST_CONVOLUTION +
        "assert m.malloc_tuned()\n"
        "def work():\n"
        "    a = np.ones((64, 1 << 16), np.float32); b = a * 2; return float(b[0, 0])\n"
        "work(); work()\n"
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): work()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    # 5 rounds of two 16 MiB arrays would be ~40,000 faults without the tuning
    assert int(out.stdout.strip()) < 1000


@linux_only
def test_opt_out_by_environment():
    env = dict(os.environ, MINIRES_MALLOC_TUNING="Off")
    code = "import minires, minires.kernels.memory as m\n" + _FIRST_CONVOLUTION + "print(m.malloc_tuned())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         timeout=120)
    assert out.stdout.strip() == "False"


def test_tune_malloc_reports_success_on_linux():
    assert memory.tune_malloc() is sys.platform.startswith("linux")
