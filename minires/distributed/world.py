"""The process world: was this process started by an MPI launcher, and with how many peers?

Everything here reads environment variables only, so a single process decides that it
is alone without importing ``mpi4py`` (importing it initialises MPI).
"""

from __future__ import annotations

import os

#: the world-size variables MPI launchers export to every process they start:
#: MPICH / Intel MPI (Hydra), Open MPI, MVAPICH2
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")

MPI_INSTALL_HINT = "install the MPI extra: pip install 'minires[mpi]' (mpi4py and the mpich wheel with mpiexec)"


def _first_int(names) -> int | None:
    for name in names:
        try:
            return int(os.environ.get(name, ""))  # (int() ignores surrounding blanks)
        except ValueError:  # unset, empty or not a number
            continue
    return None


def launcher_world_size() -> int:
    """The world size an MPI launcher announced in the environment (1 when not launched by one).

    Reads ``PMI_SIZE`` (MPICH, Intel MPI), ``OMPI_COMM_WORLD_SIZE`` (Open MPI) and
    ``MV2_COMM_WORLD_SIZE`` (MVAPICH2). Launchers that export none of them (``srun``
    without an MPI plugin, for instance) need ``--distributed``.
    """
    return max(_first_int(SIZE_VARIABLES) or 1, 1)  # (unset, 0 or negative: 1)


def launcher_rank() -> int:
    """This process's rank as announced by the launcher (0 when not launched by one)."""
    return max(_first_int(RANK_VARIABLES) or 0, 0)  # (unset or negative: 0)


def wants_distributed(force: bool = False) -> bool:
    """True when this process should join an MPI world: ``force`` or a launcher world of size > 1."""
    return bool(force) or launcher_world_size() > 1


def threads_per_rank(local_size: int) -> int:
    """This rank's share of its node's CPUs when ``local_size`` ranks share the node.

    All the CPUs the launcher bound this process to when it bound it to fewer than the
    node has; else the node's CPUs divided evenly (at least 1), so the ranks of one node
    do not oversubscribe it.
    """
    total = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = total
    if allowed < total:
        return max(1, allowed)
    return max(1, total // max(1, local_size))
