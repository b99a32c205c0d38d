"""Smoke tests of the benchmark helpers that do not need PyTorch (tiny sizes, seconds)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ab_step_alternates_variants_and_prints_ratios():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "ab_step.py"), "--batch-size", "4", "--rounds", "2",
         "nn.set_fusion(True)", "nn.set_fusion(False)"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    lines = out.strip().splitlines()
    assert "2 alternated rounds" in lines[0]
    assert lines[1].rstrip().endswith("nn.set_fusion(True)") and "(1.000)" in lines[1]
    assert lines[2].rstrip().endswith("nn.set_fusion(False)")
