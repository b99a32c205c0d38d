"""One training step: forward and backward, the data-parallel allreduce, gradient
tracking, the update; the GPU's device-side metric sums; the opt-in CUDA-graph step.

:class:`TrainingStep` is a mixin of :class:`~minires.train.trainer.Trainer`: it reads
the trainer's ``model``, ``optimizer``, ``scheduler``, ``parallel``, ``tracker``,
``config``, ``device`` and ``partial`` (set up by ``Trainer.setup``), and reports a
non-finite loss through ``RunState._nonfinite``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import config as settings
from .. import functional as F
from ..analysis.tracking import tracked_step
from ..autograd import Tensor
from ..backend import get_array_module
from .evaluate import count_hits
from .run_dir import GRADIENTS


class TrainingStep:
    """The update of one global batch, and the bookkeeping of its loss and hits."""

    @property
    def lr(self) -> float:
        """The learning rate of the next update (first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def _train_step(self, x, y, batch: int):
        """One update on this rank's part ``x, y`` of a global batch of ``batch`` examples.

        Returns:
            ``(loss_sum, correct, stop)`` over the global batch (device scalars on a GPU),
            ``stop`` true when any rank asked to stop (Ctrl-C) before this step ended.
        """
        with tracked_step(self.tracker, self.global_step) as tracked:
            logits, loss, loss_sum = self._forward_backward(x, y, batch)
            correct = count_hits(logits, y)
            # data parallel: one allreduce of the gradients, with the loss, hits and stop flag
            on_gpu = self.device != "cpu"
            loss_sum, correct, stop = self.parallel.reduce_step(loss_sum, correct if on_gpu else int(correct),
                                                                self._stop_requested)
            if not on_gpu:  # the global mean loss: every rank decides alike (GPU: see _flush_device_metrics)
                self._check_loss_finite(loss_sum / batch)
            if tracked.active:  # before the update: the step's (summed) gradients and weights
                mean_loss = float(loss_sum) / batch if self.parallel.active else float(loss.item())
                tracked.measure(epoch=self.epoch + 1, loss=mean_loss, lr=self.lr)
            self.optimizer.step()
        if tracked.record is not None and self.parallel.is_writer:
            self._append_record(self.run_dir.file(GRADIENTS), tracked.record)
        self.scheduler.step()
        return loss_sum, correct, stop

    def _forward_backward(self, x, y, batch: int):
        """Forward, loss and backward of this rank's part of a batch: ``(logits, loss, summed loss)``.

        The backward pass carries this rank's share of the global mean loss (``part / batch``).
        """
        logits = self.model(Tensor(x))
        loss = F.cross_entropy(logits, Tensor(y), label_smoothing=self.config.label_smoothing)
        if self.device != "cpu":
            # no host read inside a GPU step: the loss stays on the device (see _accumulate_device)
            loss_sum = loss.data.astype(np.float64) * len(y)
        else:
            loss_sum = float(loss.item()) * len(y)
        self.optimizer.zero_grad()
        weight = self.parallel.loss_weight(len(y), batch)  # this rank's share of the global mean loss
        xp = get_array_module(logits.data)
        loss.backward() if weight == 1.0 else loss.backward(xp.full((), weight, loss.dtype))
        return logits, loss, loss_sum

    def _check_loss_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise self._nonfinite(f"the loss became {loss} at epoch {self.epoch + 1}, step {self.step + 1} "
                                  f"(lr {self.lr:g})")

    # On the GPU, losses and hit counts accumulate in device scalars and are read (one
    # host synchronisation) every GPU_SYNC_EVERY steps, before a checkpoint and at the end
    # of an epoch; a NaN/inf loss is therefore reported up to that many steps late.
    GPU_SYNC_EVERY = 50

    def _count_step(self, loss_sum, correct, n: int, on_gpu: bool) -> bool:
        """Add one step's sums to the epoch's; True when ``self.partial`` is up to date (the bar may show it)."""
        if on_gpu:
            self._accumulate_device(loss_sum, correct, n)
            return self._pending["steps"] >= self.GPU_SYNC_EVERY and self._flush_device_metrics()
        self.partial["loss_sum"] += loss_sum
        self.partial["correct"] += correct
        self.partial["seen"] += n
        return True

    def _accumulate_device(self, loss_sum, correct, n: int) -> None:
        xp = get_array_module(loss_sum)
        pending = getattr(self, "_pending", None)
        if pending is None:
            pending = self._pending = {"loss_sum": xp.zeros((), np.float64), "correct": xp.zeros((), np.int64),
                                       "seen": 0, "steps": 0, "first_step": self.step + 1}
        pending["loss_sum"] += loss_sum
        pending["correct"] += correct
        pending["seen"] += n
        pending["steps"] += 1

    def _flush_device_metrics(self) -> bool:
        """Move the device-side sums into ``self.partial`` (one host read); True if anything was pending."""
        pending = getattr(self, "_pending", None)
        if pending is None:
            return False
        self._pending = None
        loss_sum = float(pending["loss_sum"])
        if not math.isfinite(loss_sum):
            last = pending["first_step"] + pending["steps"] - 1
            raise self._nonfinite(f"the loss became {loss_sum} within steps {pending['first_step']}-{last} "
                                  f"of epoch {self.epoch + 1} (lr {self.lr:g})")
        self.partial["loss_sum"] += loss_sum
        self.partial["correct"] += int(pending["correct"])
        self.partial["seen"] += pending["seen"]
        return True

    # --- the CUDA-graph step (opt-in) --------------------------------------------------

    def _graph_step(self, on_gpu: bool):
        """A :class:`~minires.kernels.graph_gpu.GraphedStep` when ``MINIRES_CUDA_GRAPH=1`` on a GPU, else None.

        Opt-in and experimental: the whole training step (forward, loss, backward, fused SGD
        update) is captured once per learning-rate value and batch shape, then replayed,
        which removes the per-launch host overhead. Only for piecewise-constant schedules
        (``paper``); a capture failure falls back to eager steps with a logged reason.

        Known limitation (verified with CuPy 14.2.0): CuPy refuses cuBLAS calls during stream
        capture, and every convolution/linear GEMM is one, so with such a CuPy the capture
        fails at the first GEMM; the log then says "unsupported by CuPy's cuBLAS binding" and
        training continues eagerly (same results, no speed-up).
        """
        if not on_gpu or not settings.get("cuda_graph"):
            return None
        if self.parallel.active:
            self.log("MINIRES_CUDA_GRAPH=1 ignored: data-parallel steps run eagerly")
            return None
        if self.config.schedule != "paper":
            self.log(f"MINIRES_CUDA_GRAPH=1 ignored: the {self.config.schedule} schedule changes the learning rate "
                     "every step (graphs are captured per learning rate; use --schedule paper)")
            return None
        from ..kernels.graph_gpu import GraphedStep  # noqa: PLC0415

        self.log("MINIRES_CUDA_GRAPH=1: experimental; CuPy versions that refuse cuBLAS during stream capture "
                 "(14.2.0 verified) cannot capture the step and it runs eagerly")
        return GraphedStep(self._step_arrays, max_graphs=8, log=self.log)

    def _graphed_train_step(self, graph_step, x, y, batch: int):
        """One update replayed from ``graph_step`` (one process, no tracking): as :meth:`_train_step`."""
        lrs = tuple(float(g["lr"]) for g in self.optimizer.param_groups)
        loss_value, correct = graph_step(x, y, variant=lrs)
        loss_sum, stop = loss_value.astype(np.float64) * batch, self._stop_requested
        self.scheduler.step()
        return loss_sum, correct, stop

    def _step_arrays(self, x, y):
        """Forward, loss, backward and update on device arrays; returns device scalars (loss, hits)."""
        logits = self.model(Tensor(x))
        loss = F.cross_entropy(logits, Tensor(y), label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.data, count_hits(logits, y)
