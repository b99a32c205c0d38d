"""Smoke test of benchmarks/io_load.py at a tiny size (the timings themselves are for a quiet machine)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_io_load_benchmark_runs_every_format():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "io_load.py"), "--model", "resnet20",
                          "--rounds", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("resnet20: ") and "load_state_dict" in lines[1]
    assert [line.split()[0] for line in lines[2:4]] == ["safetensors", "npz"]
