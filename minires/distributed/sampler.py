"""Which examples each rank serves: its part of every global batch, its share of evaluation batches.

The global batch of a step (``--batch-size`` examples, in the epoch's order) is cut into
``size`` contiguous parts whose lengths differ by at most one, the first
``batch % size`` parts one longer: rank ``r`` trains on part ``r``. Together the parts
are exactly the batch a single process would train on, so the data order does not
depend on the world size. Evaluation batches go round-robin: rank ``r`` evaluates
batches ``r, r + size, r + 2 size, ...`` whole, so every batch is computed exactly as in
one process.
"""

from __future__ import annotations

import numpy as np


def part_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """``(start, stop)`` of part ``rank`` when ``n`` items are cut into ``size`` near-equal parts.

    The first ``n % size`` parts hold ``n // size + 1`` items, the others ``n // size``.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, size) with size >= 1, got rank {rank}, size {size}")
    base, extra = divmod(int(n), size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class DistributedSampler:
    """This rank's part of each global batch and its share of evaluation batches.

    Args:
        rank: this process's rank.
        size: the number of ranks.

    Example:
        >>> DistributedSampler(1, 3).split(np.arange(16))   # parts of 6, 5, 5
        array([ 6,  7,  8,  9, 10])
    """

    def __init__(self, rank: int = 0, size: int = 1):
        part_bounds(0, rank, size)  # validates
        self.rank, self.size = int(rank), int(size)

    def split(self, batch_indices: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of one global batch (a view)."""
        start, stop = part_bounds(len(batch_indices), self.rank, self.size)
        return batch_indices[start:stop]

    def part_size(self, batch: int) -> int:
        """How many of a global batch of ``batch`` examples this rank gets."""
        start, stop = part_bounds(batch, self.rank, self.size)
        return stop - start

    def eval_steps(self, num_batches: int) -> range:
        """The evaluation batches this rank computes: ``rank, rank + size, ...``."""
        return range(self.rank, int(num_batches), self.size)

    def __repr__(self) -> str:
        return f"DistributedSampler(rank={self.rank}, size={self.size})"
