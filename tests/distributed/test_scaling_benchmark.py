"""benchmarks/scaling.py: the ring-allreduce cost model and its report (the measurements run in the benchmark)."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def scaling():
    spec = importlib.util.spec_from_file_location("scaling", os.path.join(ROOT, "benchmarks", "scaling.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(scaling):
    allreduce = {"resnet20": {"parameters": 250_000, "bytes": 1_000_000, "allreduce_s": 5e-4,
                              "mpi_allreduce_only_s": 4e-4, "ranks": 2}}
    steps = {"resnet20": {"step_s": 0.5, "batch": 128, "image_size": 32, "threads": 2}}
    runs = {"minires:1x2": [{"step_s": 0.5, "images_per_s": 256.0}],
            "minires:2x1": [{"step_s": 0.4, "images_per_s": 320.0, "allreduce_s": 0.004}],
            "torch:1x2": [{"step_s": 0.45, "images_per_s": 284.4}]}
    return {"date": "today", "machine": {"cpu": "test", "cores": 2}, "command": "python benchmarks/scaling.py",
            "args": {"model": "resnet20", "batch_size": 128, "rounds": 1, "latency_us": 25.0},
            "throughput": runs, "allreduce": allreduce, "steps": steps,
            "cost_model": scaling.cost_model(allreduce, steps, 25e-6)}


def test_ring_allreduce_cost_model(scaling):
    rows = _record(scaling)["cost_model"]
    by = {(r["gbit_s"], r["nodes"]): r for r in rows}
    assert by[(10, 1)]["efficiency"] == 1.0 and by[(10, 1)]["allreduce_s"] == 0.0
    # 2 nodes at 10 Gbit/s: 2 (1/2) 1 MB / 1.25 GB/s + 2 * 25 us = 0.85 ms
    assert by[(10, 2)]["allreduce_s"] == pytest.approx(0.8e-3 + 50e-6)
    assert by[(10, 2)]["efficiency"] == pytest.approx(0.5 / (0.5 + 0.85e-3))
    assert by[(100, 64)]["efficiency"] > by[(10, 64)]["efficiency"]
    assert [by[(25, p)]["efficiency"] for p in scaling.NODES] == sorted(
        (by[(25, p)]["efficiency"] for p in scaling.NODES), reverse=True)


def test_report_and_plot(scaling, tmp_path):
    record = _record(scaling)
    text = scaling.markdown(record)
    assert "| minires | 2x1 | 320 | 0.4 | 0.01 | 0.00125 |" in text
    assert "| resnet20 | 10 |" in text and "64 nodes" in text
    pytest.importorskip("matplotlib")
    assert scaling.plot(record, str(tmp_path / "scaling.png")) and (tmp_path / "scaling.png").stat().st_size > 0
