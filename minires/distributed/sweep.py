"""Sweeps: independent runs (a model and a seed, say) spread over the ranks.

:func:`run_sweep` hands out the jobs in rounds of ``size``: in round ``k`` rank ``r`` runs
job ``k * size + r``. After each round rank 0 receives the round's results and handles
them in job order, so files written from them come out exactly as one process writes
them, and a sweep killed half-way keeps every finished round. A job that raises stops
the sweep on every rank with that error (after its round).
"""

from __future__ import annotations

from .communicator import Communicator, LocalCommunicator


def run_sweep(jobs, run, comm: Communicator | None = None, on_result=None, should_stop=None):
    """Run ``run(job)`` for every job, spread over the ranks; collect the results on rank 0.

    Args:
        jobs: the jobs (any picklable values), in the order one process would run them.
        run: ``run(job) -> result`` (the result must be picklable).
        comm: the communicator (default: one process, which runs everything in order).
        on_result: called on rank 0 as ``on_result(job, result)`` for each job, in job order,
            after each round (one process: after each job).
        should_stop: called on rank 0 before each round (one process: before each job);
            True stops the sweep on every rank (a time budget, for instance).

    Returns:
        On rank 0 the results of the jobs that ran, in job order; ``None`` on the other ranks.

    Raises:
        Whatever a job raised, on every rank (marked ``collective``).
    """
    comm = comm if comm is not None else LocalCommunicator()
    jobs = list(jobs)
    results = []
    for start in range(0, len(jobs), comm.size):
        stop = should_stop() if (comm.is_writer and should_stop is not None) else False
        if comm.bcast_object(stop):
            break
        index = start + comm.rank
        # (one process: a job's error propagates at once, as it always did)
        outcome = attempt(lambda: run(jobs[index]), reraise=comm.size == 1) if index < len(jobs) else None
        round_outcomes = comm.gather_object(outcome)
        error = None
        if comm.is_writer:
            for offset, (kind, value) in enumerate(o for o in round_outcomes if o is not None):
                if kind == "error":
                    error = error or value
                    continue
                results.append(value)
                if on_result is not None:
                    on_result(jobs[start + offset], value)
        error = comm.bcast_object(error)
        if error is not None:
            error.collective = True
            raise error
    return results if comm.is_writer else None


def balance(costs, size: int) -> list:
    """The rank that owns each job: the costliest first, each onto the least-loaded rank so far.

    Args:
        costs: a positive cost per job (parameters, multiply-adds, ...).
        size: the number of ranks.

    Returns:
        One rank per job (ties go to the lower rank, so every rank computes the same list).
    """
    loads = [0.0] * size
    owners = [0] * len(costs)
    for job in sorted(range(len(costs)), key=lambda j: (-costs[j], j)):
        rank = min(range(size), key=lambda r: (loads[r], r))
        owners[job] = rank
        loads[rank] += costs[job]
    return owners


def attempt(fn, reraise: bool = False):
    """``('ok', fn())``, or ``('error', the exception)`` for the caller to deliver to every rank."""
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - delivered to every rank by the caller
        if reraise:
            raise
        return "error", exc
