"""Sweeps spread over ranks write what one process writes (one kernel thread per process in both)."""

import csv
import os

import pytest

from . import mpirun

pytestmark = pytest.mark.mpi

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMING = {"seconds", "minires_s", "torch_s"}


def _csv(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _both(ranks, args, folder, script=mpirun.DRIVER, timeout=300):
    """Run ``args --out folder/one`` in one process and ``--out folder/many`` on ``ranks`` ranks."""
    for name, n in (("one", 0), ("many", ranks)):
        rc, output, _ = mpirun.run(n, [*args, "--out", str(folder / name)], timeout, script=script)
        assert rc == 0, output
    return folder / "one", folder / "many"


@pytest.mark.slow
def test_gradflow_spread_over_ranks_writes_the_same_files(tmp_path):
    one, many = _both(3, ["gradflow", "--model", "plain20", "resnet20", "--seeds", "2", "--batch-size", "8",
                          "--data", "gaussian", "--no-plots"], tmp_path)
    assert sorted(os.listdir(one)) == sorted(os.listdir(many))
    for name in ("gradnorms.csv", "blocks.csv", "summary.csv"):
        assert _csv(one / name) == _csv(many / name), name
        assert len(_csv(one / name)) > 0
    assert (one / "blocks.md").read_text() == (many / "blocks.md").read_text()
    assert [r["seed"] for r in _csv(many / "summary.csv")] == ["0", "1", "0", "1"]


@pytest.mark.slow
def test_gradnorm_benchmark_spread_over_ranks(tmp_path):
    one, many = _both(2, ["--quick", "--no-torch", "--parts", "depth", "scale"], tmp_path,
                      script=os.path.join(ROOT, "benchmarks", "gradnorm.py"))
    rows = _csv(one / "gradnorm.csv")
    assert len(rows) == 5 and rows == _csv(many / "gradnorm.csv")


@pytest.mark.slow
def test_degradation_benchmark_spread_over_ranks(tmp_path):
    one, many = _both(2, ["--models", "plain20", "resnet20", "--epochs", "2", "--train-subset", "40",
                          "--test-subset", "20", "--batch-size", "8", "--logs-per-epoch", "2", "--warmup-steps", "2"],
                      tmp_path, script=os.path.join(ROOT, "benchmarks", "degradation.py"))
    rows = _csv(one / "degradation.csv")
    assert len(rows) == 2 * 2 * 2 and rows == _csv(many / "degradation.csv")
    for model in ("plain20", "resnet20"):  # each written by the rank that trained the model
        gradients = [(folder / "degradation_runs" / model / "gradients.jsonl").read_text() for folder in (one, many)]
        assert gradients[0] and gradients[0] == gradients[1], model
