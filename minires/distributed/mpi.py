"""The MPI communicator: mpi4py's buffer collectives on NumPy arrays.

Importing this module does not import ``mpi4py`` (which initialises MPI); constructing
:class:`MPICommunicator` does.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

import numpy as np

from .communicator import Communicator, _check_root
from .world import MPI_INSTALL_HINT, launcher_rank, launcher_world_size


def import_mpi():
    """``mpi4py.MPI`` (initialising MPI), or an ``ImportError`` that says how to install it."""
    try:
        from mpi4py import MPI  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"minires distributed needs mpi4py ({exc}); {MPI_INSTALL_HINT}") from None
    return MPI


class MPICommunicator(Communicator):
    """Collectives over an MPI communicator on NumPy arrays (host memory).

    Args:
        comm: an ``mpi4py.MPI.Comm`` (default ``MPI.COMM_WORLD``).

    Example:
        >>> comm = MPICommunicator()            # under mpiexec -n 4
        >>> grads = np.ones(10, np.float32)
        >>> comm.allreduce(grads)               # now 4.0 everywhere
    """

    backend = "mpi"

    def __init__(self, comm=None):
        announced = launcher_world_size()
        if announced > 1:  # watch from before MPI's start-up, which also waits on the launcher
            watch_launcher(launcher_rank(), announced)
        MPI = import_mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        if self.size > 1 and announced <= 1:
            watch_launcher(self.rank, self.size)

    def _buffer(self, array, what: str):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"MPICommunicator.{what}: expected a NumPy array, got {type(array).__name__} "
                            "(use the NCCL communicator for CuPy arrays)")
        if not array.flags.c_contiguous:
            raise ValueError(f"MPICommunicator.{what}: the array must be C-contiguous")
        return array

    def allreduce(self, array):
        self.comm.Allreduce(self._MPI.IN_PLACE, self._buffer(array, "allreduce"), op=self._MPI.SUM)
        return array

    def broadcast(self, array, root: int = 0):
        _check_root(root, self.size)
        self.comm.Bcast(self._buffer(array, "broadcast"), root=root)
        return array

    def allgather(self, array):
        array = np.ascontiguousarray(array)
        out = np.empty((self.size,) + array.shape, array.dtype)
        self.comm.Allgather(self._buffer(array, "allgather"), out)
        return out

    def bcast_object(self, obj, root: int = 0):
        _check_root(root, self.size)
        return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj) -> list:
        return self.comm.allgather(obj)

    def gather_object(self, obj, root: int = 0):
        _check_root(root, self.size)
        return self.comm.gather(obj, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # the launcher forwards each rank's output through pipes and stops reading them when it tears
        # the job down: a moment's grace lets this rank's last lines (why it failed) reach the user
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(int(code))


#: seconds a failing rank waits between printing its error and aborting the job
ABORT_GRACE_S = 0.5
#: seconds between two checks that the launcher is still there
WATCH_INTERVAL_S = 1.0


def watch_launcher(rank: int, size: int) -> threading.Thread:
    """End this rank when the process that started it (the launcher's proxy) is gone.

    Collectives wait for every rank; if the launcher dies (killed, or tearing down a job
    whose abort did not reach every rank), a surviving rank would otherwise spin in its
    next collective forever. A daemon thread notices the parent change (the rank is
    re-parented) within :data:`WATCH_INTERVAL_S` and exits the process with status 1.
    mpi4py releases the GIL inside blocking MPI calls, so the thread runs while the rank
    waits.
    """
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(WATCH_INTERVAL_S)
            if os.getppid() != parent:
                with contextlib.suppress(OSError, ValueError):  # stderr was a pipe to the launcher, gone with it
                    print(f"minires: rank {rank} of {size}: the MPI launcher (pid {parent}) is gone; exiting",
                          file=sys.stderr, flush=True)
                os._exit(1)

    thread = threading.Thread(target=watch, name="minires-launcher-watch", daemon=True)
    thread.start()
    return thread
