"""Data parallelism: identical replicas, one gradient allreduce per step.

Every rank holds the same model (parameters and buffers broadcast from rank 0 at the
start), trains on its part of the global batch (:mod:`minires.distributed.sampler`) and
backpropagates its part of the *global* mean loss: with ``B`` examples in the global
batch and ``B_r`` on rank ``r``, rank ``r`` backpropagates ``(B_r / B) * mean_r(loss)``,
so the sum over ranks of the gradients is exactly the gradient of the global mean loss
(``1 / size`` when the parts are equal, as PyTorch DDP's average, and correctly weighted
when they are not). :class:`GradientAllreduce` sums the gradients as one allreduce over a
flat buffer allocated once per dtype (ChainerMN's packing), which also carries a few
per-step scalars (the loss sum, the hit count, a stop request) so that every rank sees
the same global values at no extra latency. Then every rank applies the same update.

One allreduce per step, after the backward pass: on CPUs the ranks compute on all cores
during backward, so overlapping the allreduce with it would only move work around, and
the allreduce is a small part of a step (``benchmarks/scaling.py`` measures it).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..backend import get_array_module
from .communicator import Communicator, LocalCommunicator
from .sampler import DistributedSampler
from .sweep import attempt


def _groups(tensors):
    """``dtype name -> [tensors]`` in first-seen order."""
    groups = {}
    for t in tensors:
        groups.setdefault(t.data.dtype.name, []).append(t)
    return groups


def _slices(tensors):
    """Each tensor with the slice its elements take in a flat buffer of all of them, in order."""
    offset = 0
    for t in tensors:
        yield t, slice(offset, offset + t.data.size)
        offset += t.data.size


def broadcast_tensors(tensors, comm: Communicator, root: int = 0) -> None:
    """Overwrite the arrays of ``tensors`` on every rank with ``root``'s (one broadcast per dtype)."""
    if comm.size == 1:
        return
    for group in _groups([t for t in tensors if t is not None]).values():
        xp = get_array_module(group[0].data)
        flat = xp.concatenate([t.data.ravel() for t in group])
        comm.broadcast(flat, root)
        for t, part in _slices(group):
            t.data[...] = flat[part].reshape(t.data.shape)


def broadcast_state(model, comm: Communicator, root: int = 0) -> None:
    """Overwrite every parameter and buffer of ``model`` with ``root``'s."""
    broadcast_tensors(list(model.parameters()) + list(model.buffers()), comm, root)


class GradientAllreduce:
    """Sum the gradients of ``parameters`` over all ranks: one allreduce per dtype per call.

    The flat buffer is allocated at the first call and reused; after the call each
    parameter's ``.grad`` is a view into it holding the sum (parameters without a
    gradient keep ``None``: they have none on any rank, since every rank runs the same model).

    Args:
        parameters: the trainable parameters (all on one device).
        comm: the communicator.
        num_extras: scalars summed along with the gradients (in the first dtype's buffer).
    """

    def __init__(self, parameters, comm: Communicator, num_extras: int = 0):
        self.params = [p for p in parameters if p.requires_grad]
        self.comm = comm
        self.num_extras = int(num_extras)
        self._buffers = None

    def _allocate(self):
        buffers = []
        for i, group in enumerate(_groups(self.params).values()):
            xp = get_array_module(group[0].data)
            extra = self.num_extras if i == 0 else 0
            buffers.append((group, xp.zeros(sum(p.data.size for p in group) + extra, group[0].data.dtype)))
        self._buffers = buffers

    def __call__(self, extras=()):
        """Sum the gradients (and ``extras``, ``num_extras`` numbers) over the ranks.

        Returns:
            The summed extras: a view of the buffer's tail, on the parameters' device, in
            the first parameter dtype (exact for counts up to 2**24 in float32).
        """
        if len(extras) != self.num_extras:
            raise ValueError(f"expected {self.num_extras} extra values, got {len(extras)}")
        if self._buffers is None:
            self._allocate()
        tail = None
        for i, (group, flat) in enumerate(self._buffers):
            for p, part in _slices(group):
                flat[part] = 0 if p.grad is None else p.grad.reshape(-1)
            if i == 0 and self.num_extras:
                tail = flat[flat.size - self.num_extras:]
                for j, value in enumerate(extras):
                    tail[j] = value
            self.comm.allreduce(flat)
            for p, part in _slices(group):
                if p.grad is not None:
                    p.grad = flat[part].reshape(p.data.shape)
        if tail is None:  # no parameters (sum the extras alone) or no extras (nothing more to sum)
            xp = np if not self._buffers else get_array_module(self._buffers[0][1])
            tail = xp.asarray(list(extras), np.float64)
            if self.num_extras:
                self.comm.allreduce(tail)
        return tail


class ConfigurationMismatch(RuntimeError):
    """Ranks started with different settings or code: raised on every rank before the first step."""

    collective = True  # every rank raises it at the same point (see minires.distributed.abort_on_error)


def check_same_everywhere(comm: Communicator, description: dict, what: str = "settings") -> None:
    """Raise :class:`ConfigurationMismatch` on every rank unless all ranks pass equal ``description`` dicts.

    The message names each differing key with rank 0's and the other rank's value.
    """
    everyone = comm.allgather_object(description)
    problems = []
    for rank, other in enumerate(everyone[1:], start=1):
        keys = sorted(set(everyone[0]) | set(other), key=str)
        diffs = [f"{k}: rank 0 {everyone[0].get(k)!r}, rank {rank} {other.get(k)!r}"
                 for k in keys if everyone[0].get(k) != other.get(k)]
        if diffs:
            problems.append("; ".join(diffs))
    if problems:
        raise ConfigurationMismatch(f"the {comm.size} ranks were started with different {what} ("
                                    + " | ".join(problems) + "); start every rank with the same command, "
                                    "minires version and data")


def code_fingerprint() -> str:
    """A digest of the minires source files this process runs (differs when the code does)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(n for n in files if n.endswith(".py")):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


class DataParallel:
    """The points where a training loop meets the other ranks, for any world size.

    For a lone process (a :class:`LocalCommunicator`) every method is the identity (no
    copies, no communication), so it runs exactly the code it ran before data parallelism
    existed. An MPI or NCCL world, even of one rank (``--distributed`` alone), takes the
    data-parallel path (:attr:`active`).

    Args:
        comm: the communicator (default: one process).
        sync_bn: synchronise batch-norm statistics over the global batch
            (:class:`~minires.distributed.sync_batchnorm.SyncBatchNorm`); without it each
            rank normalises over its part, and the running statistics are rank 0's
            (broadcast before evaluation, as PyTorch DDP's ``broadcast_buffers``).

    Example:
        >>> parallel = DataParallel(comm, sync_bn=True)
        >>> model = parallel.prepare(model)          # before building the optimizer
        >>> loss.backward(parallel.loss_weight(len(y), batch))
        >>> loss_sum, correct, stop = parallel.reduce_step(loss_value * len(y), hits, stop)
        >>> optimizer.step()
    """

    def __init__(self, comm: Communicator | None = None, sync_bn: bool = False):
        self.comm = comm if comm is not None else LocalCommunicator()
        self.sync_bn = bool(sync_bn)
        self.sampler = DistributedSampler(self.comm.rank, self.comm.size)
        self._reduce = None

    @property
    def active(self) -> bool:
        """Whether the ranks communicate (any MPI/NCCL world), as opposed to a lone process."""
        return self.comm.backend != "local"

    @property
    def size(self) -> int:
        """The number of ranks."""
        return self.comm.size

    @property
    def is_writer(self) -> bool:
        """Whether this rank prints and writes files (rank 0)."""
        return self.comm.is_writer

    def describe(self, batch: int) -> str:
        """``'; 2 ranks (mpi), 64 images each per step, batch norm per rank'`` (``''`` alone)."""
        if not self.active:
            return ""
        low, high = batch // self.size, -(-batch // self.size)
        share = f"{low}" if low == high else f"{low}-{high}"
        return (f"; {self.size} rank{'s' if self.size > 1 else ''} ({self.comm.backend}), {share} images each per "
                f"step, batch norm {'over the global batch (--sync-bn)' if self.sync_bn else 'per rank'}")

    def check_ranks_agree(self, settings: dict, version: str) -> None:
        """Raise :class:`ConfigurationMismatch` on every rank unless all run the same settings and code.

        Code: the minires ``version``, a digest of its source files and the NumPy version.
        """
        check_same_everywhere(self.comm, settings, "settings")
        check_same_everywhere(self.comm, {"minires version": version, "source": code_fingerprint(),
                                          "numpy": np.__version__}, "code")

    def resume_note(self, saved_size: int) -> str | None:
        """What resuming a run of ``saved_size`` ranks at this world size means (``None`` when the same)."""
        if saved_size == self.size:
            return None
        return (f"resuming a run of {saved_size} rank(s) with {self.size}: the data order and augmentation are the "
                "same, " + ("and --sync-bn keeps batch-norm statistics global, so results equal an uninterrupted run "
                            "up to rounding" if self.sync_bn else
                            "but without --sync-bn each rank normalises its part of the batch, so results differ "
                            "from an uninterrupted run"))

    def prepare(self, model):
        """Make ``model`` a replica: sync batch norm (with ``sync_bn``), rank 0's parameters and buffers.

        Returns:
            The model to train (the same object unless it is itself a batch-norm layer).
        """
        if not self.active:
            return model
        if self.sync_bn:
            from .sync_batchnorm import convert_sync_batchnorm  # noqa: PLC0415

            model = convert_sync_batchnorm(model, self.comm)
        broadcast_state(model, self.comm)
        self._reduce = GradientAllreduce(model.parameters(), self.comm, num_extras=3)
        return model

    def loss_weight(self, part: int, batch: int) -> float:
        """The factor of this rank's mean loss in the global mean loss: ``part / batch``."""
        return part / batch if self.active else 1.0

    def reduce_step(self, loss_sum, correct, stop: bool):
        """After backward: sum gradients, losses, hits and stop requests over the ranks.

        Args:
            loss_sum: this rank's summed loss (mean loss times its examples).
            correct: this rank's hit count.
            stop: whether this rank wants to stop after this step (Ctrl-C).

        Returns:
            ``(loss_sum, correct, stop)`` over all ranks (device scalars on a GPU, numbers on
            the CPU); ``stop`` is true on every rank when any rank asked.
        """
        if not self.active:
            return loss_sum, correct, stop
        total = self._reduce((loss_sum, correct, 1.0 if stop else 0.0))
        stop = bool(total[2] > 0)  # (read on the host every step: on a GPU, one synchronisation)
        xp = get_array_module(total)
        if xp is np:
            return float(total[0]), int(round(float(total[1]))), stop
        return total[0].astype(np.float64), xp.rint(total[1]).astype(np.int64), stop  # device scalars

    def sync_buffers(self, model) -> None:
        """Without sync BN: give every rank rank 0's running statistics (before evaluation)."""
        if not self.active or self.sync_bn:
            return
        broadcast_tensors(list(model.buffers()), self.comm, 0)

    def merge_rows(self, rows: list) -> list:
        """Every rank's ``(index, ...)`` rows, on every rank, sorted by index."""
        if not self.active:
            return rows
        return sorted((row for part in self.comm.allgather_object(rows) for row in part), key=lambda r: r[0])

    def from_writer(self, fn):
        """``fn()`` run on rank 0 only, its result (or exception) delivered to every rank."""
        if not self.active:
            return fn()
        outcome = self.comm.bcast_object(attempt(fn) if self.is_writer else None)
        if outcome[0] == "error":  # re-raised on every rank
            exc = outcome[1]
            exc.collective = True
            raise exc
        return outcome[1]
