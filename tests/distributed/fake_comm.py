"""A communicator whose ranks are threads of one process: collectives without MPI, for unit tests.

Sums run in rank order, as MPI's do for the small worlds of these tests.
"""

import threading

import numpy as np

from minires.distributed.communicator import Communicator


class ThreadCommunicator(Communicator):
    backend = "threads"

    def __init__(self, shared, rank, size):
        self.shared, self.rank, self.size = shared, rank, size
        self.local_rank, self.local_size = rank, size
        self.aborted = None

    def _exchange(self, value):
        self.shared["slots"][self.rank] = value
        self.shared["barrier"].wait()
        values = list(self.shared["slots"])
        self.shared["barrier"].wait()
        return values

    def allreduce(self, array):
        values = self._exchange(array.copy())
        total = values[0].copy()
        for v in values[1:]:
            total += v
        array[...] = total
        return array

    def broadcast(self, array, root=0):
        array[...] = self._exchange(array.copy())[root]
        return array

    def allgather(self, array):
        return np.stack(self._exchange(np.array(array)))

    def bcast_object(self, obj, root=0):
        return self._exchange(obj)[root]

    def allgather_object(self, obj):
        return self._exchange(obj)

    def gather_object(self, obj, root=0):
        values = self._exchange(obj)
        return values if self.rank == root else None

    def barrier(self):
        self.shared["barrier"].wait()

    def abort(self, code=1):
        self.aborted = code
        raise SystemExit(code)


def run_ranks(size, fn, timeout=60):
    """``[fn(comm) for each rank]``, the ranks running as threads; re-raises the first error."""
    shared = {"slots": [None] * size, "barrier": threading.Barrier(size, timeout=timeout)}
    comms = [ThreadCommunicator(shared, r, size) for r in range(size)]
    results, errors = [None] * size, []

    def work(rank):
        try:
            results[rank] = fn(comms[rank])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if errors:
        raise errors[0]
    return results
