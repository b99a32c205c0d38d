"""The communicator interface, and the one-process communicator.

A communicator connects the ``size`` processes (ranks) of a data-parallel run. Array
collectives work in place on contiguous arrays of the communicator's kind (NumPy for
:class:`~minires.distributed.mpi.MPICommunicator`, CuPy for
:class:`~minires.distributed.nccl.NCCLCommunicator`); object collectives move small
picklable Python values (configurations, checkpoints, result rows). Every collective must
be called by every rank in the same order.
"""

from __future__ import annotations

import os
import sys


class Communicator:
    """The collectives data parallelism needs; subclasses implement them for one transport.

    Attributes:
        rank: this process's index in ``[0, size)``; rank 0 writes files and prints.
        size: the number of processes.
        local_rank: this process's index among the ranks on its node (its GPU is
            ``cuda:<local_rank>``).
        local_size: the number of ranks on this node.
        backend: ``'local'``, ``'mpi'`` or ``'nccl'``.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str = "?"

    @property
    def is_writer(self) -> bool:
        """True on rank 0, the rank that prints progress and writes output files."""
        return self.rank == 0

    def allreduce(self, array):
        """Sum ``array`` over all ranks, in place; every rank gets the same sum. Returns ``array``."""
        raise NotImplementedError

    def broadcast(self, array, root: int = 0):
        """Overwrite ``array`` on every rank with ``root``'s, in place. Returns ``array``."""
        raise NotImplementedError

    def allgather(self, array):
        """Every rank's ``array`` stacked in rank order: a new array of shape ``(size, *array.shape)``."""
        raise NotImplementedError

    def bcast_object(self, obj, root: int = 0):
        """``root``'s ``obj`` (any picklable value) on every rank."""
        raise NotImplementedError

    def allgather_object(self, obj) -> list:
        """Every rank's ``obj`` in rank order, on every rank."""
        raise NotImplementedError

    def gather_object(self, obj, root: int = 0):
        """Every rank's ``obj`` in rank order on ``root``; ``None`` elsewhere."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait until every rank has called ``barrier``."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every rank of the run at once with exit status ``code`` (never returns).

        For failures only some ranks see (an exception, a crash); ranks blocked in a
        collective would otherwise wait forever for a peer that is gone.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"


class LocalCommunicator(Communicator):
    """The communicator of a single process: every collective is the identity.

    Lets code written for ``N`` ranks run unchanged in one process (``size == 1``)
    without MPI.
    """

    backend = "local"

    def allreduce(self, array):
        return array

    def broadcast(self, array, root: int = 0):
        _check_root(root, 1)
        return array

    def allgather(self, array):
        return array[None].copy()

    def bcast_object(self, obj, root: int = 0):
        _check_root(root, 1)
        return obj

    def allgather_object(self, obj) -> list:
        return [obj]

    def gather_object(self, obj, root: int = 0):
        _check_root(root, 1)
        return [obj]

    def barrier(self) -> None:
        return None

    def abort(self, code: int = 1) -> None:
        sys.stderr.flush()
        os._exit(code)


def _check_root(root: int, size: int) -> None:
    if not 0 <= root < size:
        raise ValueError(f"root must be a rank in [0, {size}), got {root}")
