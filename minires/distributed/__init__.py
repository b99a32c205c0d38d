"""Data-parallel training and distributed sweeps over MPI (CPU) and NCCL (GPU).

Start ``N`` processes with an MPI launcher (``mpiexec -n N minires train ...``); each
calls :func:`init`, which detects the world from the launcher's environment and returns
this process's :class:`~minires.distributed.communicator.Communicator`. A process that
was not started by a launcher (or by one with a single process) gets a
:class:`~minires.distributed.communicator.LocalCommunicator` and never imports
``mpi4py``. On a GPU (``device='cuda'``) the arrays travel over NCCL, one GPU per rank
(``cuda:<local rank>``); on the CPU over MPI, with the node's cores shared out among
its ranks.

Pieces: :mod:`~minires.distributed.world` (launcher detection),
:mod:`~minires.distributed.communicator` (the interface), :mod:`~minires.distributed.mpi`
and :mod:`~minires.distributed.nccl` (transports), :mod:`~minires.distributed.sampler`
(which rank serves which examples), :mod:`~minires.distributed.data_parallel` (parameter
broadcast, gradient allreduce, the trainer's hooks), :mod:`~minires.distributed.sync_batchnorm`
and :mod:`~minires.distributed.sweep` (independent runs spread over ranks).

Example:
    >>> from minires import distributed
    >>> comm = distributed.init()                  # under mpiexec -n 4: rank 0..3 of 4
    >>> parallel = distributed.DataParallel(comm, sync_bn=True)
"""

from __future__ import annotations

import contextlib
import sys

from .communicator import Communicator, LocalCommunicator
from .data_parallel import (ConfigurationMismatch, DataParallel, GradientAllreduce, broadcast_state,
                            check_same_everywhere, code_fingerprint)
from .sampler import DistributedSampler, part_bounds
from .sweep import balance, run_sweep
from .world import MPI_INSTALL_HINT, launcher_world_size, threads_per_rank, wants_distributed

_communicator: Communicator | None = None


def init(device: str = "cpu", force: bool = False) -> Communicator:
    """Join the run's process world and return this process's communicator.

    Call it early (``minires`` does so before parsing its arguments) so that a failure
    on one rank can abort the others. A later call with ``device='cuda'`` adds the
    NCCL layer over the same ranks.

    Args:
        device: ``'cpu'`` (MPI on NumPy arrays) or ``'cuda'`` (NCCL on CuPy arrays, one
            GPU per rank; the communicator's ``device`` attribute names it).
        force: join an MPI world even when no launcher announced one (``--distributed``;
            for launchers that set no known variable, or a one-process MPI world).

    Returns:
        The communicator; a :class:`LocalCommunicator` (no MPI) for a lone process.

    Raises:
        ImportError: an MPI world is wanted but mpi4py (or CuPy's NCCL) is missing.
    """
    global _communicator
    if _communicator is None or (force and _communicator.backend == "local"):
        if not wants_distributed(force):
            _communicator = LocalCommunicator()
            return _communicator
        from .mpi import MPICommunicator  # noqa: PLC0415

        _communicator = MPICommunicator()
    if str(device).startswith("cuda") and _communicator.backend == "mpi":
        from .nccl import NCCLCommunicator  # noqa: PLC0415

        _communicator = NCCLCommunicator(_communicator)
    elif _communicator.backend == "mpi" and not getattr(_communicator, "cpus_shared", False):
        share_cpus(_communicator.local_size)
        _communicator.cpus_shared = True
    return _communicator


def get_communicator() -> Communicator:
    """The communicator :func:`init` returned, or a :class:`LocalCommunicator` before it was called."""
    return _communicator if _communicator is not None else LocalCommunicator()


def get_rank() -> int:
    """This process's rank (0 when alone or before :func:`init`)."""
    return get_communicator().rank


def share_cpus(local_size: int) -> int:
    """Give this rank its share of the node's CPUs as kernel threads (see :func:`threads_per_rank`).

    A thread count chosen explicitly (``MINIRES_NUM_THREADS`` or ``minires.config``; any
    other than the default CPU count) is kept. With one thread per rank, OpenBLAS is held
    to one thread as well, so ``local_size`` ranks run ``local_size`` threads in all.
    Returns the thread count.
    """
    from .. import config  # noqa: PLC0415
    from ..kernels import parallel  # noqa: PLC0415

    if parallel.get_num_threads() == config.SETTINGS["num_threads"].default():
        parallel.set_num_threads(threads_per_rank(local_size))
    threads = parallel.get_num_threads()
    if threads == 1 and local_size > 1:
        parallel.set_blas_threads(1)
    return threads


@contextlib.contextmanager
def abort_on_error(comm: Communicator | None = None):
    """End every rank when this one fails, so none waits forever for it.

    An exception raised inside the block on one rank of a multi-rank run is printed with
    the rank's number and the whole run is aborted (exit status 1, or 130 for Ctrl-C).
    Exceptions marked ``collective`` (raised identically on every rank, such as
    :class:`ConfigurationMismatch`) propagate normally, so every rank exits the same way.
    """
    comm = comm if comm is not None else get_communicator()
    try:
        yield comm
    except BaseException as exc:
        if comm.size == 1 or getattr(exc, "collective", False) or isinstance(exc, SystemExit) and not exc.code:
            raise
        code = 130 if isinstance(exc, KeyboardInterrupt) else 1
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        print(f"minires: rank {comm.rank} of {comm.size} failed ({message}); aborting all ranks", file=sys.stderr)
        comm.abort(code)
        raise


_SYNC_BN = ("SyncBatchNorm", "convert_sync_batchnorm", "sync_batch_norm")


def __getattr__(name):
    """``SyncBatchNorm`` and friends, imported on first use (they pull in ``minires.nn``)."""
    if name in _SYNC_BN:
        from . import sync_batchnorm  # noqa: PLC0415

        return getattr(sync_batchnorm, name)
    raise AttributeError(f"module 'minires.distributed' has no attribute {name!r}")


__all__ = [
    "SyncBatchNorm", "convert_sync_batchnorm", "sync_batch_norm", "init", "get_communicator", "get_rank",
    "share_cpus", "abort_on_error", "Communicator", "LocalCommunicator", "DataParallel", "GradientAllreduce",
    "DistributedSampler", "ConfigurationMismatch", "broadcast_state", "check_same_everywhere", "code_fingerprint",
    "part_bounds", "run_sweep", "balance", "launcher_world_size", "threads_per_rank", "wants_distributed",
    "MPI_INSTALL_HINT",
]
