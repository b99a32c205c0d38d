"""Checks that run inside an MPI world (started by tests/distributed/test_mpi.py through mpiexec).

    mpiexec -n N python mpi_checks.py collectives [cpu|cuda]
    mpiexec -n N python mpi_checks.py evaluation OUT
    mpiexec -n N python mpi_checks.py stranded DIR  (waits forever: for the launcher-death test)

Each rank asserts; rank 0 prints ``OK <check>`` at the end. An assertion on any rank
aborts the world (non-zero exit).
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from minires import distributed  # noqa: E402


def collectives(device):
    comm = distributed.init(device, force=True)
    xp = np
    if device == "cuda":
        import cupy as xp  # noqa: PLC0415
    r, n = comm.rank, comm.size
    assert comm.backend == ("nccl" if device == "cuda" else "mpi"), comm.backend
    assert 0 <= comm.local_rank < comm.local_size <= n
    for dtype in (np.float32, np.float64, np.int64):
        a = xp.arange(5, dtype=dtype) + r
        comm.allreduce(a)
        assert (xp.asnumpy(a) if device == "cuda" else a).tolist() == (np.arange(5) * n + n * (n - 1) // 2).tolist()
    b = xp.full(3, float(r))
    comm.broadcast(b, root=n - 1)
    assert float(b.sum()) == 3.0 * (n - 1)
    gathered = comm.allgather(xp.asarray([r, 10 * r], np.float64))
    assert gathered.shape == (n, 2) and float(gathered[:, 1].sum()) == 10 * n * (n - 1) / 2
    assert comm.bcast_object({"from": r}, root=0) == {"from": 0}
    assert comm.allgather_object(r * r) == [i * i for i in range(n)]
    gathered = comm.gather_object(f"rank {r}", root=0)
    assert gathered == ([f"rank {i}" for i in range(n)] if r == 0 else None)
    check_gradient_allreduce(comm, xp)
    if device == "cuda":
        assert comm.device == f"cuda:{comm.local_rank}"
        check_sync_bn_on_gpu(comm)
    comm.barrier()
    return "collectives"


def check_gradient_allreduce(comm, xp):
    """The flat-buffer gradient sum (and its extras) on this communicator's arrays."""
    import minires as mr  # noqa: PLC0415

    params = [mr.nn.Parameter(xp.zeros(shape, np.float32)) for shape in ((3, 2), (4,))]
    for i, p in enumerate(params):
        p.grad = xp.full(p.data.shape, float(comm.rank + i), np.float32)
    extras = distributed.GradientAllreduce(params, comm, num_extras=2)((1.0, float(comm.rank)))
    n = comm.size
    assert float(params[0].grad.sum()) == 6 * n * (n - 1) / 2
    assert float(params[1].grad.sum()) == 4 * (n * (n - 1) / 2 + n)
    assert [float(v) for v in extras] == [n, n * (n - 1) / 2]


def check_sync_bn_on_gpu(comm):
    """SyncBatchNorm on CuPy arrays over NCCL equals the NumPy one on the same numbers."""
    import minires as mr  # noqa: PLC0415
    from minires.backend import as_numpy  # noqa: PLC0415
    from minires.distributed import LocalCommunicator, SyncBatchNorm  # noqa: PLC0415

    x = np.random.default_rng(comm.rank).standard_normal((4, 3, 5, 5))
    results = []
    for device, c in (("cpu", LocalCommunicator()), (comm.device, comm)):
        bn = SyncBatchNorm(3, comm=c).double().to(device)
        t = mr.tensor(x, requires_grad=True, device=device)
        out = bn(t)
        out.backward(mr.tensor(np.ones_like(x), device=device))
        results.append((as_numpy(out.data), as_numpy(t.grad)))
    if comm.size == 1:
        for a, b in zip(*results):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def evaluation(out):
    """Sharded evaluation (every rank's share of the batches, rank 0's BN statistics) equals one process's."""
    import minires.train.trainer as trainer_module  # noqa: PLC0415
    from minires.train import TrainConfig, Trainer  # noqa: PLC0415
    from minires.train.evaluate import evaluate_model  # noqa: PLC0415
    from models import tiny_model  # noqa: PLC0415

    comm = distributed.init(force=True)
    trainer_module.build_model = tiny_model
    config = TrainConfig(model="resnet20", data="embedded", epochs=1, batch_size=16, train_subset=64,
                         test_subset=100, eval_batch_size=16, out=out, progress=False, plot=False)
    trainer = Trainer(config, log=lambda *a: None, comm=comm)
    trainer.setup()
    bn = trainer.model[1]
    bn.running_mean.data[...] = 0.1 * (comm.rank + 1)   # ranks disagree: evaluation must use rank 0's
    bn.running_var.data[...] = 1.0 + comm.rank
    loss, acc = trainer.evaluate()
    everyone = comm.allgather_object((loss, acc))
    assert all(e == everyone[0] for e in everyone), everyone
    if comm.rank == 0:
        one_loss, correct, seen = evaluate_model(trainer.model, trainer.test_loader)
        assert seen == 100 and (loss, acc) == (one_loss, correct / seen), ((loss, acc), (one_loss, correct / seen))
    return "evaluation"


def stranded(folder):
    """Rank 0 waits in a collective that rank 1 never joins; rank 1 sleeps. Neither ends by itself.

    Each rank creates ``folder/rank-N`` once MPI is up, so the test knows when both wait.
    """
    import time  # noqa: PLC0415

    comm = distributed.init(force=True)
    with open(os.path.join(folder, f"rank-{comm.rank}"), "w") as f:
        f.write(str(os.getpid()))
    if comm.rank == 0:
        comm.barrier()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    check = sys.argv[1]
    if check == "stranded":
        stranded(sys.argv[2])
    device = sys.argv[2] if check == "collectives" and len(sys.argv) > 2 else "cpu"
    with distributed.abort_on_error(distributed.init(force=True)):  # a failed assertion ends every rank
        done = collectives(device) if check == "collectives" else evaluation(sys.argv[2])
    if distributed.get_rank() == 0:
        print(f"OK {done}", flush=True)
