"""Data-parallel training under a real ``mpiexec`` (2 and 3 ranks, oversubscribed on small machines).

Every run is ``tests/distributed/driver.py`` (the ``minires`` CLI with a small model) on
96 embedded images, global batch 16: 8 + 8 images per step at 2 ranks, 6 + 5 + 5 at 3.
"""

import json
import os
import signal
import time

import numpy as np
import pytest

from minires.io import load_state_dict
from tests.helpers import without_timings

from . import mpirun

pytestmark = pytest.mark.mpi

TRAIN = ["train", "--data", "embedded", "--train-subset", "96", "--test-subset", "48", "--epochs", "2",
         "--batch-size", "16", "--eval-batch-size", "16", "--lr", "0.1", "--schedule", "linear", "--warmup-frac",
         "0.2", "--momentum", "0.9", "--nesterov", "--weight-decay", "5e-4", "--cutout", "8", "--seed", "4",
         "--no-progress", "--no-plot"]
FLOAT64_SYNC = TRAIN + ["--dtype", "float64", "--sync-bn", "--checkpoint-every", "1"]


def _train(ranks, args, out, timeout=300, **env):
    rc, output, _ = mpirun.run(ranks, [*args, "--out", str(out)], timeout,
                               mpirun.environment(MINIRES_TEST_MODEL="resnet8", **env))
    assert rc == 0, output
    return output


def _assert_close(a, b, rtol=1e-10):
    """Every tensor of two state dicts equal to ``rtol`` relative to its largest entry."""
    assert sorted(a) == sorted(b)
    for key in a:
        scale = max(float(np.abs(a[key]).max()), 1e-30)
        assert float(np.abs(a[key].astype(np.float64) - b[key]).max()) <= rtol * scale, key


def _metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return without_timings(json.loads(line) for line in f)


@pytest.fixture(scope="module")
def one_process_float64(tmp_path_factory):
    """The ResNet-8 run in one process, float64, batch norm over the whole batch."""
    out = tmp_path_factory.mktemp("one") / "run"
    _train(0, FLOAT64_SYNC, out)
    return out


def test_collectives():
    rc, output, _ = mpirun.run(3, ["collectives"], 120, script=mpirun.CHECKS)
    assert rc == 0 and "OK collectives" in output, output


@pytest.mark.slow
def test_sharded_evaluation_is_exactly_one_process(tmp_path):
    rc, output, _ = mpirun.run(3, ["evaluation", str(tmp_path / "ev")], 120, script=mpirun.CHECKS)
    assert rc == 0 and "OK evaluation" in output, output


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_sync_bn_float64_equals_one_process_on_the_global_batch(tmp_path, one_process_float64, ranks):
    # (one rank: --distributed makes a one-process MPI world, which takes the data-parallel path)
    output = _train(ranks, FLOAT64_SYNC + ["--distributed"] * (ranks == 1), tmp_path / "run")
    assert output.count("epoch train loss") == 1 and output.count("done in") == 1, output  # rank 0 alone prints
    assert f"{ranks} rank{'s' if ranks > 1 else ''} (mpi)" in output
    _assert_close(load_state_dict(one_process_float64 / "model.npz"), load_state_dict(tmp_path / "run" / "model.npz"))
    mine, theirs = _metrics(tmp_path / "run"), _metrics(one_process_float64)
    assert [m["test_acc"] for m in mine] == [m["test_acc"] for m in theirs]
    for a, b in zip(mine, theirs):
        for key in ("train_loss", "test_loss", "train_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-10), key
    assert sorted(os.listdir(tmp_path / "run")) == sorted(os.listdir(one_process_float64))  # rank 0's files alone


@pytest.mark.slow
def test_gradient_tracking_under_sync_bn_records_the_global_parameter_gradients(tmp_path):
    """Every rank takes part in the tracker's measurements (the option-B shortcut's sync BN runs again); rank 0
    writes gradients.jsonl, whose parameter gradients are those of the whole batch."""
    args = TRAIN + ["--dtype", "float64", "--sync-bn", "--shortcut", "B", "--track-gradients", "3", "--epochs", "1"]
    _train(0, args, tmp_path / "one")
    _train(2, args, tmp_path / "two")
    one, two = (_jsonl(tmp_path / name / "gradients.jsonl") for name in ("one", "two"))
    assert [r["step"] for r in one] == [r["step"] for r in two] == [0, 3]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-10)
        assert [p["name"] for p in a["params"]] == [p["name"] for p in b["params"]]
        for pa, pb in zip(a["params"], b["params"]):
            for key in ("grad_norm", "weight_norm", "update_ratio"):
                expected = pa[key] if pa[key] is None else pytest.approx(pa[key], rel=1e-8)  # (None: a 0/0 ratio)
                assert pb[key] == expected, (pa["name"], key)
        assert [blk["name"] for blk in a["blocks"]] == [blk["name"] for blk in b["blocks"]]


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _reference_per_part(ranks, seed=4, epochs=2, batch=16):
    """One process running the trainer's updates with each rank's part normalised on its own.

    Rank ``r``'s part goes through the model separately (its own batch statistics) and
    backpropagates ``part / batch`` times its mean loss; the running statistics kept are
    those of rank 0's parts (the other parts' updates are undone), as the ranks keep rank 0's.
    """
    import minires as mr
    import minires.functional as F
    from minires.data import Loader, channel_stats, load_dataset
    from minires.distributed import DistributedSampler
    from minires.train import TrainConfig, build_optimizer

    from .models import resnet8

    config = TrainConfig(model="resnet20", data="embedded", epochs=epochs, batch_size=batch, lr=0.1,
                         schedule="linear", warmup_frac=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
                         cutout=8, seed=seed, train_subset=96)
    train = load_dataset("embedded")[0].first(96)
    mean, std = channel_stats(train.images)
    loaders = [Loader(train, batch, mean, std, train=True, seed=seed, cutout=8, sampler=DistributedSampler(r, ranks),
                      dtype=np.float64, prefetch=False) for r in range(ranks)]
    mr.manual_seed(seed)
    model = resnet8().to("cpu", np.float64)
    optimizer, scheduler = build_optimizer(model, config, len(loaders[0]) * epochs)
    for epoch in range(epochs):
        for step in range(len(loaders[0])):
            optimizer.zero_grad()
            for rank in reversed(range(ranks)):  # rank 0 last: its statistics stay
                x, y = loaders[rank].batch(epoch, step)
                kept = [b.data.copy() for b in model.buffers()]
                loss = F.cross_entropy(model(mr.Tensor(x)), mr.Tensor(y))
                loss.backward(np.asarray(len(y) / loaders[0].global_batch(step)))
                if rank:
                    for b, old in zip(model.buffers(), kept):
                        b.data[...] = old
            optimizer.step()
            scheduler.step()
    return {k: np.asarray(v) for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 3])
def test_without_sync_bn_each_rank_normalises_its_part(tmp_path, ranks):
    _train(ranks, TRAIN + ["--dtype", "float64"], tmp_path / "run")
    _assert_close(_reference_per_part(ranks), load_state_dict(tmp_path / "run" / "model.npz"))


@pytest.mark.slow
def test_a_one_rank_world_changes_no_bit(tmp_path):
    """``--distributed`` alone: sampler, loss weight, gradient allreduce, sharded evaluation of one rank."""
    env = mpirun.environment(MINIRES_TEST_MODEL="tiny")
    for ranks, extra, out in ((0, [], "plain"), (1, ["--distributed"], "world")):
        rc, output, _ = mpirun.run(ranks, [*TRAIN, *extra, "--out", str(tmp_path / out)], 300, env)
        assert rc == 0, output
    assert "1 rank (mpi)" in output
    a, b = load_state_dict(tmp_path / "plain" / "model.npz"), load_state_dict(tmp_path / "world" / "model.npz")
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert _metrics(tmp_path / "plain") == _metrics(tmp_path / "world")


def _kill_one_rank_after_progress(ranks, args, out, env, rng, victim=1):
    """Start a run, SIGKILL rank ``victim`` after a checkpoint; check every rank ended within seconds."""
    piddir = out.parent / f"pids-{out.name}"
    piddir.mkdir()
    run = mpirun.launch(ranks, [*args, "--out", str(out)],
                        mpirun.environment(MINIRES_TEST_PIDDIR=piddir, MINIRES_TEST_STEP_SLEEP=0.05, **env))
    try:
        ckpt = out / "checkpoint.npz"
        deadline = time.time() + 240
        while run.proc.poll() is None and not ckpt.exists():
            assert time.time() < deadline, "no checkpoint"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))  # (after the first checkpoint 11 steps of at least 0.05 s are left)
        assert run.proc.poll() is None, "the run ended before the kill"
        run.remember_tree()
        os.kill(int((piddir / f"rank{victim}.pid").read_text()), signal.SIGKILL)
        killed = time.time()
        rc, output, _ = run.wait(60)
    finally:
        run.end()
    assert rc != 0, output
    assert time.time() - killed < 30, "the other ranks did not end within seconds"
    meta = json.loads(np.load(ckpt)["__meta__"].tobytes())
    return meta["epoch"], meta["step"]


@pytest.mark.slow
def test_sigkill_of_one_rank_then_resume_is_bit_identical(tmp_path):
    env = {"MINIRES_TEST_MODEL": "tiny"}
    args = TRAIN + ["--checkpoint-every", "1"]
    rc, output, _ = mpirun.run(2, [*args, "--out", str(tmp_path / "ref")], 300, mpirun.environment(**env))
    assert rc == 0, output
    position = _kill_one_rank_after_progress(2, args, tmp_path / "run", env, np.random.default_rng(int(time.time())))
    print("killed after the checkpoint at (epoch, step)", position)
    rc, output, _ = mpirun.run(2, [*args, "--out", str(tmp_path / "run"), "--resume"], 300, mpirun.environment(**env))
    assert rc == 0 and "resuming" in output, output
    a, b = load_state_dict(tmp_path / "ref" / "model.npz"), load_state_dict(tmp_path / "run" / "model.npz")
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert _metrics(tmp_path / "ref") == _metrics(tmp_path / "run")


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_after_the_same_step_then_resume_is_exact(tmp_path):
    env = {"MINIRES_TEST_MODEL": "tiny"}
    args = [*TRAIN, "--epochs", "6", "--checkpoint-every", "1000"]
    rc, output, _ = mpirun.run(2, [*args, "--out", str(tmp_path / "ref")], 300, mpirun.environment(**env))
    assert rc == 0, output
    run = mpirun.launch(2, [*args, "--out", str(tmp_path / "run")], mpirun.environment(**env))
    try:
        deadline = time.time() + 240
        while run.proc.poll() is None and not (tmp_path / "run" / "checkpoint.npz").exists():  # an epoch ended
            assert time.time() < deadline, "no checkpoint"
            time.sleep(0.01)
        run.proc.send_signal(signal.SIGINT)  # the launcher passes Ctrl-C on to every rank
        rc, output, _ = run.wait(120)
    finally:
        run.end()
    assert rc == 130 and "interrupted at epoch" in output, output
    meta = json.loads(np.load(tmp_path / "run" / "checkpoint.npz")["__meta__"].tobytes())
    print("stopped at (epoch, step)", (meta["epoch"], meta["step"]))
    rc, output, _ = mpirun.run(2, [*args, "--out", str(tmp_path / "run"), "--resume"], 300,
                               mpirun.environment(**env))
    assert rc == 0, output
    a, b = load_state_dict(tmp_path / "ref" / "model.npz"), load_state_dict(tmp_path / "run" / "model.npz")
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert _metrics(tmp_path / "ref") == _metrics(tmp_path / "run")


@pytest.mark.slow
def test_resume_at_another_world_size_equals_the_uninterrupted_run(tmp_path, one_process_float64):
    rng = np.random.default_rng(int(time.time()))
    position = _kill_one_rank_after_progress(2, FLOAT64_SYNC, tmp_path / "run", {"MINIRES_TEST_MODEL": "resnet8"},
                                             rng, victim=0)
    print("killed after the checkpoint at (epoch, step)", position)
    output = _train(3, FLOAT64_SYNC + ["--resume"], tmp_path / "run")
    assert "resuming a run of 2 rank(s) with 3" in output, output
    _assert_close(load_state_dict(one_process_float64 / "model.npz"), load_state_dict(tmp_path / "run" / "model.npz"))
    assert [m["test_acc"] for m in _metrics(tmp_path / "run")] == \
        [m["test_acc"] for m in _metrics(one_process_float64)]


@pytest.mark.slow
def test_a_rank_that_raises_ends_every_rank(tmp_path):
    rc, output, seconds = mpirun.run(3, [*TRAIN, "--out", str(tmp_path / "run")], 120,
                                     mpirun.environment(MINIRES_TEST_MODEL="tiny", MINIRES_TEST_RAISE="1:2"))
    assert rc != 0, output
    assert "minires: internal error (rank 1 of 3): RuntimeError: injected failure on rank 1" in output, output
    assert "rank 1 of 3 failed; aborting all ranks" in output
    assert seconds < 60


def _is_rank(pid: int) -> bool:
    """Whether ``pid`` is a living (not zombie) Python rank running mpi_checks.py."""
    import sys

    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and argv[0] == sys.executable and mpirun.CHECKS in argv


@pytest.mark.slow
def test_ranks_end_when_the_launcher_is_killed(tmp_path):
    import signal

    launch = mpirun.launch(2, ["stranded", str(tmp_path)], script=mpirun.CHECKS)
    try:
        deadline = time.time() + 120
        while not all((tmp_path / f"rank-{r}").exists() for r in (0, 1)) and time.time() < deadline:
            time.sleep(0.2)  # both ranks up and waiting
        ranks = [p for p in launch.tagged() if _is_rank(p)]
        assert len(ranks) == 2, launch.tagged()
        time.sleep(0.5)
        for pid in launch.tagged():  # the launcher and its proxy die at once, without telling the ranks
            if not _is_rank(pid):
                os.kill(pid, signal.SIGKILL)
        stranded_for = time.time()
        while any(_is_rank(p) for p in ranks) and time.time() - stranded_for < 30:
            time.sleep(0.2)
        left = [p for p in ranks if _is_rank(p)]
        assert not left, f"ranks {left} still run {time.time() - stranded_for:.0f} s after the launcher died"
        assert time.time() - stranded_for < 10
    finally:
        launch.end()


def _mpmd(left, right, out, env):
    """``mpiexec -n 1 driver LEFT : -n 1 driver RIGHT``: two ranks started with different arguments."""
    import sys

    launcher = mpirun.mpiexec()
    command = launcher + ["-n", "1", sys.executable, mpirun.DRIVER, *left, "--out", str(out), ":",
                          "-n", "1", sys.executable, mpirun.DRIVER, *right, "--out", str(out)]
    return mpirun.Launch(command, mpirun.environment(**env)).wait(120)


@pytest.mark.slow
def test_ranks_with_different_settings_or_code_refuse_to_start(tmp_path):
    rc, output, _ = _mpmd(TRAIN, TRAIN[:-2] + ["--lr", "0.2", "--no-progress", "--no-plot"], tmp_path / "a",
                          {"MINIRES_TEST_MODEL": "tiny"})
    assert rc == 2, output
    assert output.count("minires: error: the 2 ranks were started with different settings (lr: rank 0 0.1, "
                        "rank 1 0.2)") == 1, output
    assert not (tmp_path / "a").exists()
    rc, output, _ = mpirun.run(2, [*TRAIN, "--out", str(tmp_path / "b")], 120,
                               mpirun.environment(MINIRES_TEST_MODEL="tiny", MINIRES_TEST_FINGERPRINT="1"))
    assert rc == 2 and "started with different code (source: rank 0 '" in output and "rank 1 'other code'" in output, \
        output
    assert not (tmp_path / "b").exists()
