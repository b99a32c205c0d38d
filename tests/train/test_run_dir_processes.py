"""Real processes on one output folder: two runs at once, kill -9 then --resume, a full disk, a read-only disk.

Each run is ``driver.py`` (the ``minires`` CLI with the tiny test model) in a subprocess;
``MINIRES_TEST_HOLD`` pauses a run before a given step so a test acts at a known moment.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from minires.io import load_state_dict
from minires.train import load_checkpoint, read_jsonl
from tests.helpers import without_timings

from .tmpfs import HERE, cli, cli_env, run_scenario, wait_for, wait_for_checkpoint_of_step

# 64 images in batches of 16: 4 steps per epoch, a checkpoint after every step
ARGS = ["train", "--data", "embedded", "--train-subset", "64", "--test-subset", "32", "--epochs", "3",
        "--batch-size", "16", "--lr", "0.1", "--checkpoint-every", "1", "--eval-batch-size", "32", "--no-progress",
        "--no-plot"]


def _start(args, out, **env):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "driver.py"), *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=cli_env(**env))


def _assert_same_weights(a, b):
    a, b = load_state_dict(a), load_state_dict(b)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


def _assert_readable_run(folder):
    """config.json parses, every metrics line is whole, the checkpoint loads and is finite."""
    json.load(open(os.path.join(folder, "config.json")))
    data = open(os.path.join(folder, "metrics.jsonl"), "rb").read()
    assert not data or data.endswith(b"\n")
    records = [json.loads(line) for line in data.splitlines()]
    if os.path.exists(os.path.join(folder, "checkpoint.npz")):
        arrays, _ = load_checkpoint(os.path.join(folder, "checkpoint.npz"))
        assert all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f")
    assert not [n for n in os.listdir(folder) if n.endswith((".tmp", ".part"))]
    return records


@pytest.fixture
def reference(tmp_path):
    """An uninterrupted run of ARGS."""
    code, output = cli([*ARGS, "--out", str(tmp_path / "ref")])
    assert code == 0, output
    return tmp_path / "ref"


def test_second_run_on_a_busy_folder_is_refused_and_changes_nothing(tmp_path):
    """Case 3: `$B --lr 0.1` and `$B --lr 0.02 --seed 7` on one --out."""
    out, release = tmp_path / "run", tmp_path / "release"
    first = _start(ARGS, out, MINIRES_TEST_HOLD=f"2:{release}")
    try:
        wait_for(str(out / "checkpoint.npz"), first)  # step 1 saved; the run waits before step 2, holding the lock
        code, output = cli([*ARGS, "--lr", "0.02", "--seed", "7", "--out", str(out)])
        assert code == 2, output
        assert f"is in use by another minires run (pid {first.pid} on " in output and "internal error" not in output
    finally:
        release.touch()
    assert first.wait(timeout=300) == 0, first.communicate()[0].decode()
    records = _assert_readable_run(out)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert json.load(open(out / "config.json"))["lr"] == 0.1
    assert load_checkpoint(out / "checkpoint.npz")[1]["config"]["seed"] == 0


@pytest.mark.slow
def test_two_runs_started_together_one_is_refused(tmp_path):
    out = tmp_path / "run"
    procs = [_start(ARGS, out), _start([*ARGS, "--lr", "0.02", "--seed", "7"], out)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outputs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert "in use by another minires run" in outputs[loser] or "already holds a run" in outputs[loser]
    records = _assert_readable_run(out)
    assert [r["epoch"] for r in records] == [1, 2, 3]  # one run's records only, not interleaved
    config = json.load(open(out / "config.json"))
    assert config["lr"] == (0.1, 0.02)[winner]
    assert load_checkpoint(out / "checkpoint.npz")[1]["config"]["lr"] == config["lr"]


def test_sigkill_releases_the_lock_and_resume_finishes(tmp_path):
    """kill -9 of the process holding the lock: the next --resume is not blocked (bit-exactness of such
    resumes is test_resume_sigkill's subject)."""
    out, release = tmp_path / "run", tmp_path / "never"
    proc = _start(ARGS, out, MINIRES_TEST_HOLD=f"6:{release}")
    wait_for_checkpoint_of_step(str(out), 5, proc)  # the run waits before step 6, holding the lock
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert json.load(open(out / ".minires.lock"))["pid"] == proc.pid  # the dead holder's note stays; its lock went
    code, output = cli(["train", "--out", str(out), "--resume", "--no-progress", "--no-plot"])
    assert code == 0, output
    assert "resuming" in output and "at epoch 2, step 1" in output
    assert [r["epoch"] for r in _assert_readable_run(out)] == [1, 2, 3]
    assert json.load(open(out / ".minires.lock"))["pid"] != proc.pid


@pytest.mark.slow
@pytest.mark.parametrize("hold, failing_file", [(4, "metrics.jsonl"), (7, "checkpoint.npz")])
def test_disk_full_stops_cleanly_and_resume_completes_the_run(tmp_path, reference, hold, failing_file):
    """A real full disk (a 4 MiB tmpfs filled up while the run waits before step ``hold``).

    Before step 4 (the last of epoch 1) the next write is the epoch's metrics record; before
    step 7 it is the checkpoint. The run stops with a message naming that file and saying
    how to continue; every file in the folder stays readable; after space is freed,
    ``--resume`` ends with the same metrics and weights as an uninterrupted run.
    """
    report = run_scenario("disk_full", {"work": str(tmp_path), "args": ARGS, "hold": hold})
    output = report["output"]
    assert report["code"] == 2, output
    assert f"minires: error: cannot write {tmp_path}/mnt/run/{failing_file}: No space left on device" in output
    assert "the disk is full" in output and "--resume" in output and "internal error" not in output
    _assert_readable_run(tmp_path / "full")
    assert report["resume_code"] == 0, report["resume_output"]
    assert without_timings(_assert_readable_run(tmp_path / "resumed")) == \
        without_timings(read_jsonl(reference / "metrics.jsonl"))
    _assert_same_weights(reference / "model.npz", tmp_path / "resumed" / "model.npz")


@pytest.mark.slow
def test_read_only_folder_is_a_clear_error(tmp_path):
    report = run_scenario("read_only", {"work": str(tmp_path), "args": ARGS})
    assert report["first"][0] == 0, report["first"][1]
    mount = report["mount"]
    for code, output in (report["resumed"], report["other"]):
        assert code == 2, output
        assert "Read-only file system" in output and "is not writable: fix its permissions or choose another --out" \
            in output and "internal error" not in output
    assert f"cannot write {mount}/other" in report["other"][1]
    before, after = tmp_path / "before", tmp_path / "after"
    assert {n: (before / n).read_bytes() for n in os.listdir(before)} == \
        {n: (after / n).read_bytes() for n in os.listdir(after)}
