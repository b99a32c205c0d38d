"""Sampler, gradient allreduce, broadcasts, consistency checks, sweeps, abort (ranks as threads)."""

import sys

import numpy as np
import pytest

import minires as mr
import minires.nn as nn
from minires import distributed
from minires.distributed import (ConfigurationMismatch, DataParallel, DistributedSampler, GradientAllreduce,
                                 LocalCommunicator, broadcast_state, check_same_everywhere, part_bounds, run_sweep)

from .fake_comm import run_ranks


@pytest.mark.parametrize("n, size", [(16, 3), (5, 5), (7, 2), (3, 4), (0, 2), (128, 8)])
def test_parts_cover_the_batch_in_order(n, size):
    bounds = [part_bounds(n, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    lengths = [b - a for a, b in bounds]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)
    batch = np.arange(100, 100 + n)
    joined = np.concatenate([DistributedSampler(r, size).split(batch) for r in range(size)])
    np.testing.assert_array_equal(joined, batch)
    assert [DistributedSampler(r, size).part_size(n) for r in range(size)] == lengths


def test_eval_steps_round_robin_and_validation():
    steps = [list(DistributedSampler(r, 3).eval_steps(8)) for r in range(3)]
    assert steps == [[0, 3, 6], [1, 4, 7], [2, 5]]
    with pytest.raises(ValueError, match="rank must be in"):
        DistributedSampler(3, 3)


def _model(seed):
    mr.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def test_broadcast_state_copies_rank0_parameters_and_buffers():
    models = [_model(seed=rank) for rank in range(3)]  # different weights on every rank (built before the
    # threads start: the global generator is shared)

    def work(comm):
        model = models[comm.rank]
        model[1].running_mean.data[...] = comm.rank
        model[1].num_batches_tracked.data[...] = 7 * comm.rank
        broadcast_state(model, comm)
        return model.state_dict()

    states = run_ranks(3, work)
    reference = _model(seed=0).state_dict()
    for state in states:
        for key, value in state.items():
            expected = 0 if key.endswith(("running_mean", "num_batches_tracked")) else reference[key]
            np.testing.assert_array_equal(value, expected)


def test_gradient_allreduce_sums_gradients_and_extras():
    def work(comm):
        a = nn.Parameter(mr.tensor(np.zeros((2, 3), np.float32)).data)
        b = nn.Parameter(mr.tensor(np.zeros(4, np.float64)).data)   # a second dtype: its own buffer
        unused = nn.Parameter(mr.tensor(np.zeros(2, np.float32)).data)
        reduce = GradientAllreduce([a, b, unused], comm, num_extras=2)
        for step in range(2):  # the buffer is reused
            a.grad = np.full((2, 3), comm.rank + step, np.float32)
            b.grad = np.arange(4.0) * (comm.rank + 1)
            extras = reduce((1.5 * comm.rank, 1.0))
            assert unused.grad is None
        return a.grad.copy(), b.grad.copy(), np.array(extras)

    for grad_a, grad_b, extras in run_ranks(3, work):
        np.testing.assert_array_equal(grad_a, np.full((2, 3), 0 + 1 + 2 + 3, np.float32))
        np.testing.assert_array_equal(grad_b, np.arange(4.0) * 6)
        np.testing.assert_array_equal(extras, [4.5, 3.0])


def test_gradient_allreduce_is_one_collective_per_dtype():
    calls = []

    def work(comm):
        a = nn.Parameter(mr.tensor(np.zeros(3, np.float32)).data)
        a.grad = np.ones(3, np.float32)
        allreduce = comm.allreduce
        comm.allreduce = lambda array: (calls.append(array.size), allreduce(array))[1]
        assert GradientAllreduce([a], comm)().size == 0  # no extras: nothing else to sum
        assert list(GradientAllreduce([], comm, num_extras=1)((2.0,))) == [4.0]  # no parameters
        return a.grad.copy()

    for grad in run_ranks(2, work):
        np.testing.assert_array_equal(grad, [2, 2, 2])
    assert sorted(calls) == [1, 1, 3, 3]


def test_data_parallel_reduce_step_and_merge_rows():
    models = [_model(seed=rank) for rank in range(2)]

    def work(comm):
        parallel = DataParallel(comm)
        model = parallel.prepare(models[comm.rank])
        for p in model.parameters():
            p.grad = np.ones_like(p.data)
        loss_sum, correct, stop = parallel.reduce_step(2.0, 3, stop=comm.rank == 1)
        rows = parallel.merge_rows([(i, comm.rank) for i in parallel.sampler.eval_steps(5)])
        return loss_sum, correct, stop, rows, next(iter(model.parameters())).grad.copy()

    for loss_sum, correct, stop, rows, grad in run_ranks(2, work):
        assert (loss_sum, correct, stop) == (4.0, 6, True)  # one rank's Ctrl-C stops both
        assert rows == [(0, 0), (1, 1), (2, 0), (3, 1), (4, 0)]
        np.testing.assert_array_equal(grad, 2)
    assert DataParallel().loss_weight(5, 16) == 1.0
    assert DataParallel(LocalCommunicator()).reduce_step(1.5, 2, False) == (1.5, 2, False)


def test_loss_weight_is_the_share_of_the_global_batch():
    weights = run_ranks(3, lambda comm: DataParallel(comm).loss_weight(
        DistributedSampler(comm.rank, 3).part_size(16), 16))
    assert weights == [6 / 16, 5 / 16, 5 / 16]


def test_sync_buffers_takes_rank0_running_statistics_unless_sync_bn():
    models = {sync_bn: [_model(seed=0) for _ in range(2)] for sync_bn in (False, True)}

    def work(comm, sync_bn):
        parallel = DataParallel(comm, sync_bn=sync_bn)
        model = parallel.prepare(models[sync_bn][comm.rank])
        model[1].running_var.data[...] = comm.rank + 1
        parallel.sync_buffers(model)
        return float(model[1].running_var.data[0]), type(model[1]).__name__

    assert run_ranks(2, lambda c: work(c, False)) == [(1.0, "BatchNorm2d"), (1.0, "BatchNorm2d")]
    assert run_ranks(2, lambda c: work(c, True)) == [(1.0, "SyncBatchNorm"), (2.0, "SyncBatchNorm")]


def test_mismatched_settings_refused_on_every_rank_naming_the_key():
    def work(comm):
        try:
            check_same_everywhere(comm, {"lr": 0.1 if comm.rank != 2 else 0.2, "model": "resnet20"})
        except ConfigurationMismatch as exc:
            return str(exc)

    messages = run_ranks(3, work)
    assert all(m == messages[0] for m in messages)
    assert "lr: rank 0 0.1, rank 2 0.2" in messages[0] and "model" not in messages[0].split("(")[1]
    run_ranks(2, lambda comm: check_same_everywhere(comm, {"lr": 0.1}))  # equal: no error


def test_from_writer_delivers_rank0_result_or_error():
    def work(comm):
        parallel = DataParallel(comm)
        value = parallel.from_writer(lambda: f"read by rank {comm.rank}")
        try:
            parallel.from_writer(lambda: (_ for _ in ()).throw(FileExistsError("out holds a run")))
        except FileExistsError as exc:
            return value, str(exc), exc.collective

    assert run_ranks(2, work) == [("read by rank 0", "out holds a run", True)] * 2


@pytest.mark.parametrize("size", [1, 2, 3])
def test_sweep_results_in_job_order_on_rank0(size):
    jobs = [("m", s) for s in range(7)]

    def work(comm):
        seen = []
        results = run_sweep(jobs, lambda job: (job[1] ** 2, comm.rank), comm,
                            on_result=lambda job, result: seen.append(job))
        return results, seen

    out = run_ranks(size, work)
    results, seen = out[0]
    assert [r[0] for r in results] == [s ** 2 for s in range(7)]
    assert [r[1] for r in results] == [s % size for s in range(7)]  # round-robin over the ranks
    assert seen == jobs
    assert all(o == (None, []) for o in out[1:])


def test_sweep_stops_everywhere_and_errors_reach_every_rank():
    calls = []

    def work(comm):
        return run_sweep(range(10), lambda j: calls.append(j) or j, comm, should_stop=lambda: len(calls) >= 4)

    assert run_ranks(2, work)[0] == [0, 1, 2, 3]

    def failing(comm):
        try:
            run_sweep(range(4), lambda j: 1 / (j - 3), comm)
        except ZeroDivisionError as exc:
            return exc.collective

    assert run_ranks(2, failing) == [True, True]


def test_abort_on_error_aborts_multi_rank_runs_only(capsys):
    def work(comm):
        with distributed.abort_on_error(comm):
            if comm.rank == 1:
                raise RuntimeError("disk full")
            return "fine"

    with pytest.raises(SystemExit):
        run_ranks(2, work)
    assert "rank 1 of 2 failed (RuntimeError: disk full); aborting all ranks" in capsys.readouterr().err
    with pytest.raises(RuntimeError):  # one process: the exception propagates as before
        with distributed.abort_on_error(LocalCommunicator()):
            raise RuntimeError("x")

    def collective(comm):
        with distributed.abort_on_error(comm):
            raise ConfigurationMismatch("raised on every rank")

    with pytest.raises(ConfigurationMismatch):  # no abort: every rank exits the same way
        run_ranks(2, collective)


def test_lone_process_never_imports_mpi4py():
    import subprocess

    code = ("import sys, minires.distributed as d; c = d.init(); "
            "assert c.size == 1 and c.backend == 'local' and 'mpi4py' not in sys.modules, c")
    env = {k: v for k, v in __import__("os").environ.items() if k not in distributed.world.SIZE_VARIABLES}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_ranks_sharing_a_node_get_its_cores_and_one_blas_thread_each():
    import subprocess

    code = ("import os; from minires import distributed; from minires.kernels import parallel; "
            "os.sched_setaffinity(0, range(os.cpu_count()))\n"
            "t = distributed.share_cpus(os.cpu_count() * 2)\n"
            "assert t == 1 == parallel.get_num_threads(), t\n"
            "info = parallel.openblas_info()\n"
            "assert info['threads'] in (None, 1), info\n"
            "print('ok')")
    env = {k: v for k, v in __import__("os").environ.items() if k != "MINIRES_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, timeout=120, capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    assert distributed.threads_per_rank(1) >= 1


def test_describe_and_resume_notes():
    def work(comm):
        plain, synced = DataParallel(comm), DataParallel(comm, sync_bn=True)
        return (plain.describe(16), synced.describe(128), plain.resume_note(2), synced.resume_note(2),
                plain.resume_note(comm.size))

    plain, synced, differ, same, none = run_ranks(3, work)[0]
    assert plain == "; 3 ranks (threads), 5-6 images each per step, batch norm per rank"
    assert synced.endswith("42-43 images each per step, batch norm over the global batch (--sync-bn)")
    assert "results differ from an uninterrupted run" in differ and "up to rounding" in same and none is None
    assert DataParallel().describe(128) == ""
