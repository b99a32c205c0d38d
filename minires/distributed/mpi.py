"""The MPI communicator: mpi4py's buffer collectives on NumPy arrays.

Importing this module does not import ``mpi4py`` (which initialises MPI); constructing
:class:`MPICommunicator` does.
"""

from __future__ import annotations

import sys

import numpy as np

from .communicator import Communicator, _check_root
from .world import MPI_INSTALL_HINT


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
        MPI = import_mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()

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
        self.comm.Abort(int(code))
