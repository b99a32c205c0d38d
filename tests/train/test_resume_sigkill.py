"""A real kill -9 in the middle of training, then --resume: bit-identical final weights.

Each run is a subprocess of the ``minires`` CLI (with the tiny test model patched in by
``driver.py``) on 96 embedded images, checkpointing every step so kills land at all
kinds of moments: inside a step, during a checkpoint write, between epochs.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minires.io import load_state_dict
from tests.helpers import without_timings

HERE = os.path.dirname(os.path.abspath(__file__))
ARGS = ["train", "--model", "resnet20", "--data", "embedded", "--train-subset", "96", "--test-subset", "48",
        "--epochs", "3", "--batch-size", "16", "--lr", "0.2", "--schedule", "linear", "--warmup-frac", "0.15",
        "--momentum", "0.9", "--nesterov", "--weight-decay", "5e-4", "--checkpoint-every", "1", "--seed", "3",
        "--eval-batch-size", "16", "--no-progress", "--no-plot"]


def _cli(out, *extra, model="tiny"):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", MINIRES_TEST_MODEL=model,
               MINIRES_TEST_STEP_SLEEP="0.03")  # the 12 steps after the first checkpoint outlast the kill delay
    return subprocess.Popen([sys.executable, os.path.join(HERE, "driver.py"), *ARGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def _metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return without_timings(json.loads(line) for line in f)


def _reference_and_killed_run(tmp_path, max_kills, *extra, model="tiny"):
    """Run once uninterrupted (``ref``) and once killed up to ``max_kills`` times and resumed (``run``)."""
    reference = _cli(tmp_path / "ref", *extra, model=model)
    output = reference.communicate(timeout=300)[0].decode()
    assert reference.returncode == 0, output

    run = tmp_path / "run"
    ckpt = run / "checkpoint.npz"
    rng = np.random.default_rng(int(time.time()))  # different kill moments on every test run
    positions = []
    proc = _cli(run, *extra, model=model)
    for attempt in range(max_kills):
        # wait until this process has written a new checkpoint (it made progress), then a random delay
        before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        deadline = time.time() + 120
        while proc.poll() is None and (not ckpt.exists() or ckpt.stat().st_mtime_ns == before):
            assert time.time() < deadline, "no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        meta = json.loads(np.load(ckpt)["__meta__"].tobytes())
        positions.append((meta["epoch"], meta["step"]))
        proc = _cli(run, "--resume", model=model)
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output
    assert positions, "the run finished before any kill"
    print("killed after checkpoints at (epoch, step):", positions)
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")], os.listdir(run)
    return tmp_path / "ref", run


def _assert_same_weights_and_metrics(ref, run):
    a = load_state_dict(ref / "model.npz")
    b = load_state_dict(run / "model.npz")
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    assert _metrics(ref) == _metrics(run)


@pytest.mark.parametrize("max_kills", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_sigkill_and_resume_is_bit_identical(tmp_path, max_kills):
    _assert_same_weights_and_metrics(*_reference_and_killed_run(tmp_path, max_kills))


@pytest.mark.parametrize("max_kills", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_sigkill_and_resume_keep_gradients_jsonl(tmp_path, max_kills):
    # a record every step (about 1.5 kB a line for this model): kills land inside appends too
    ref, run = _reference_and_killed_run(tmp_path, max_kills, "--track-gradients", "1", model="residual")
    _assert_same_weights_and_metrics(ref, run)
    expected = (ref / "gradients.jsonl").read_bytes()
    assert expected.count(b"\n") == 18  # 3 epochs x 6 steps
    assert (run / "gradients.jsonl").read_bytes() == expected
