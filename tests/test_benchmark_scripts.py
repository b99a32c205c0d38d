"""Smoke tests of the benchmark helpers that do not need PyTorch (tiny sizes, seconds)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


@pytest.mark.slow
def test_track_overhead_runs_both_measurements_at_tiny_sizes():
    script = os.path.join(ROOT, "benchmarks", "track_overhead.py")
    steps = subprocess.run([sys.executable, script, "--batch-size", "2", "--rounds", "2", "--bound", "1000"],
                           capture_output=True, text=True, timeout=300)
    assert steps.returncode == 0, steps.stderr
    assert "plain step" in steps.stdout and "tracked step" in steps.stdout
    assert "tracking every 50 steps:" in steps.stdout and "within the 1000% bound" in steps.stdout
    epochs = subprocess.run([sys.executable, script, "--epochs-data", "embedded", "--train-subset", "32",
                             "--test-subset", "16", "--batch-size", "16", "--every", "1", "--repeats", "1",
                             "--bound", "1000"], capture_output=True, text=True, timeout=300)
    assert epochs.returncode == 0, epochs.stderr
    assert "untracked" in epochs.stdout and "tracked every 1 steps (median of 1)" in epochs.stdout


@pytest.mark.slow
def test_degradation_records_and_plots_gradient_flow_per_model(tmp_path):
    import json

    pytest.importorskip("matplotlib")
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "degradation.py"), "--models", "plain20",
                    "resnet20", "--train-subset", "40", "--test-subset", "20", "--epochs", "1", "--batch-size", "20",
                    "--track-gradients", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                   check=True)
    for model, kind in (("plain20", "plain"), ("resnet20", "original")):
        with open(tmp_path / "degradation_runs" / model / "gradients.jsonl") as f:
            records = [json.loads(line) for line in f]
        assert [r["step"] for r in records] == [0, 1]
        assert {b["kind"] for b in records[0]["blocks"]} == {kind} and len(records[0]["blocks"]) == 9
    for name in ("degradation.png", "degradation_branch_skip_ratio.png", "degradation_grad_norms.png",
                 "degradation_update_ratios.png"):
        assert (tmp_path / name).stat().st_size > 2000, name
    assert "degradation_branch_skip_ratio.png" in (tmp_path / "degradation.md").read_text()
