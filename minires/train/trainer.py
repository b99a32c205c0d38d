"""The training loop: progress bars, evaluation, metrics, checkpoints, exact resume.

Layout of an output directory ``OUT``:

- ``config.json``: the :class:`~minires.train.config.TrainConfig` plus derived facts
  (parameter count, steps per epoch, normalisation statistics);
- ``metrics.jsonl``: one JSON line per finished epoch (``epoch``, ``train_loss``,
  ``train_acc``, ``test_loss``, ``test_acc``, ``lr`` (of the next update), ``seconds``
  (training + evaluation), ``train_seconds``, ``images_per_s`` (training throughput));
- ``gradients.jsonl`` (with ``track_gradients``): every N steps, one JSON line with the
  per-block skip/branch gradient norms and the per-parameter gradient norm, weight norm
  and update ratio of that step (:mod:`minires.analysis.tracking`);
- ``checkpoint.npz``: the latest checkpoint (weights, BN statistics, optimizer state,
  schedule step, RNG states, position in the epoch), written atomically;
- ``model.npz``: final weights with state-dict names (``minires.io.load_state_dict``);
- ``curves.png``: loss and accuracy curves, when matplotlib is installed;
- ``.minires.lock``: the lock that makes the folder one run's (:mod:`minires.train.run_dir`,
  which also moves an old run aside for ``overwrite``). Files are replaced atomically or
  appended with :mod:`minires.train.jsonl`; nothing NaN or infinite is saved (:mod:`.guard`).

Exact resume: the data order and augmentation are pure functions of ``(seed, epoch)``
and ``(seed, epoch, example)`` (:mod:`minires.data.loader`), and the checkpoint holds every
other piece of state, so a run killed at any moment and resumed from its last checkpoint
performs the same floating-point operations as an uninterrupted run. On resume, the
JSONL files are cut back to what the checkpoint covers, so they too end up equal to an
uninterrupted run's.

Data parallelism (``comm`` of an MPI world, :mod:`minires.distributed`): every rank trains on
its part of each global batch and meets the others at a few points of
:class:`~minires.distributed.data_parallel.DataParallel` (replica preparation, the
gradient allreduce after backward, buffers before evaluation, sharded evaluation); rank 0
alone takes the folder's lock, prints and writes files, and reads the checkpoint, which it
sends to the others.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import numpy as np
from tqdm.auto import tqdm

from .. import __version__, backend, models
from ..analysis.tracking import GradientTracker, tracked_step
from ..backend import parse_device
from ..data import DataNotFoundError, Loader, download_cifar, load_dataset, normalization_stats
from ..distributed import DataParallel
from ..ops.loss import set_gpu_target_checks
from .checkpoint import load_checkpoint
from .config import RESUME_KEYS, TrainConfig
from .errors import NonFiniteLossError, TrainingError  # noqa: F401  (NonFiniteLossError: imported from here)
from .evaluate import evaluate_batches, sum_batches, table_header, table_row
from .guard import check_checkpoint_finite
from .plot import plot_curves
from .run_dir import CHECKPOINT, CONFIG, RunDirectory, RunDirError, unreadable_checkpoint, writing
from .run_state import RunState
from .setup import build_model, build_optimizer, check_splits, count_parameters
from .step import TrainingStep


class Trainer(RunState, TrainingStep):
    """Train one model on one dataset as described by a :class:`TrainConfig`.

    Args:
        config: the run's settings.
        log: where human-readable lines go (default ``tqdm.write``, which keeps bars intact).
        comm: the :class:`~minires.distributed.communicator.Communicator` of a data-parallel
            run (default: one process). On ranks other than 0 nothing is logged or written.

    The checkpoints and run files live in :class:`~minires.train.run_state.RunState`, the
    step and its metric sums in :class:`~minires.train.step.TrainingStep`; this class sets
    the run up and runs its epochs.

    Example:
        >>> result = Trainer(TrainConfig(model="resnet20", data="embedded", epochs=1, out="runs/x")).fit()
        >>> result["test_acc"]
    """

    def __init__(self, config: TrainConfig, log=None, comm=None):
        self.config = config.validate()
        self.parallel = DataParallel(comm, sync_bn=config.sync_bn)
        self.log = (log or tqdm.write) if self.parallel.is_writer else (lambda *args, **kwargs: None)
        self.out = os.path.abspath(config.out)
        # one GPU per rank: the NCCL communicator picked cuda:<local rank>
        self.device = getattr(comm, "device", None) or parse_device(config.device)
        self.dtype = np.dtype(config.dtype)
        self._stop_requested = False
        self.run_dir = None
        self._last_good = None  # (epoch, step) of the last checkpoint known to be all finite

    # --- setup -----------------------------------------------------------------------

    def _load_data(self):
        cfg = self.config
        try:
            train_set, test_set = load_dataset(cfg.data, cfg.dataset, check_md5=cfg.check_md5)
        except DataNotFoundError:
            if not cfg.download or cfg.data is not None:
                raise
            self.log(f"downloading {cfg.dataset} into ~/.cache/minires ...")
            download_cifar(cfg.dataset, progress=cfg.progress)
            train_set, test_set = load_dataset(None, cfg.dataset, check_md5=cfg.check_md5)
        return train_set.first(cfg.train_subset), test_set.first(cfg.test_subset)

    def setup(self, resume: bool = False, overwrite: bool = False) -> None:
        """Take the output folder, load data, build model, optimizer and schedule; restore when resuming.

        Args:
            resume: continue the run in ``config.out`` (see :meth:`RunDirectory.claim`).
            overwrite: move the files of a run already in ``config.out`` aside and start again.

        Raises:
            RunDirError: the folder is busy, holds a run (and neither flag is given), or is unwritable.
            TrainingError: the checkpoint cannot be resumed (other settings, damaged, non-finite).
        """
        if resume and overwrite:
            raise ValueError("--resume and --overwrite exclude each other: continue the run or start it again")
        models.check_name(self.config.model)
        if self.parallel.active:
            self.parallel.check_ranks_agree(
                {k: v for k, v in self.config.to_dict().items() if k not in ("device", "progress", "plot")},
                __version__)
        checkpoint = self.parallel.from_writer(lambda: self._take_output(resume, overwrite))
        try:
            self._build(checkpoint)
        except BaseException:
            self.close()
            raise

    def _take_output(self, resume: bool, overwrite: bool):
        """Lock and claim the output folder (rank 0 alone); return the checkpoint to resume, or None."""
        self.run_dir = RunDirectory(self.out)
        self.run_dir.lock()
        try:  # claim the folder (see RunDirectory.claim), then load and check its checkpoint
            path = self.run_dir.claim(resume, overwrite, self._check_resume_config, self.log)
            if path is None:
                return None
            try:
                arrays, meta = load_checkpoint(path)
            except ValueError as exc:
                raise unreadable_checkpoint(exc) from None
            self._check_resume_config(meta.get("config", {}), path)
            check_checkpoint_finite(arrays, path)
            return arrays, meta
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the output folder's lock (``fit`` does this when it returns or raises)."""
        if self.run_dir is not None:
            self.run_dir.release()

    def _build(self, checkpoint) -> None:
        cfg = self.config
        train_set, test_set = self._load_data()
        check_splits(train_set, test_set, cfg.data)
        self.train_set, self.test_set = train_set, test_set
        self.mean, self.std = normalization_stats(cfg.normalize, cfg.dataset, train_set.images)
        sampler = self.parallel.sampler if self.parallel.active else None
        self.train_loader = Loader(train_set, cfg.batch_size, self.mean, self.std, train=True, device=self.device,
                                   seed=cfg.seed, cutout=cfg.cutout, sampler=sampler, dtype=self.dtype)
        self.test_loader = Loader(test_set, cfg.eval_batch_size, self.mean, self.std, train=False,
                                  device=self.device, dtype=self.dtype)
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self._check_batch_split()

        backend.manual_seed(cfg.seed)
        self.model = build_model(cfg, train_set.num_classes)
        self.model.to(self.device, self.dtype)
        self.model = self.parallel.prepare(self.model)
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg, self.total_steps)
        self.tracker = GradientTracker(self.model, cfg.track_gradients) if cfg.track_gradients else None

        self.epoch, self.step = 0, 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        if checkpoint is not None:
            self._restore(*checkpoint)
            self._last_good = (self.epoch, self.step)
            self.log(f"resuming {self.out} at epoch {self.epoch + 1}, step {self.step} of {self.steps_per_epoch}")
        if self.parallel.is_writer:
            self._truncate_logs()
            self._write_config(train_set, test_set)

    def _check_batch_split(self) -> None:
        """Every rank needs at least one example of every global batch (the last one is the smallest)."""
        ranks = self.parallel.size
        smallest = self.train_loader.global_batch(self.steps_per_epoch - 1)
        if ranks > 1 and smallest < ranks:
            error = TrainingError(
                f"--batch-size {self.config.batch_size} over {ranks} ranks: the last batch of each epoch holds "
                f"{smallest} of the {len(self.train_set)} training images, fewer than the ranks; choose a batch "
                f"size that leaves at least {ranks} (or --train-subset N)")
            error.collective = True  # (every rank computes the same sizes)
            raise error

    def _check_resume_config(self, saved: dict, source: str) -> None:
        label = "checkpoint" if source.endswith(CHECKPOINT) else CONFIG
        mine = self.config.to_dict()
        diffs = [f"--{k.replace('_', '-')}: {label} {saved.get(k)!r}, now {mine[k]!r}"
                 for k in RESUME_KEYS if k in saved and saved[k] != mine[k]]
        if diffs:
            raise TrainingError("cannot resume with different settings (" + "; ".join(diffs) +
                                f"); resume with the same flags as {source} or start a new --out")

    # --- the loop --------------------------------------------------------------------

    def evaluate(self) -> tuple[float, float]:
        """Mean loss and accuracy on the test split, in eval mode without gradients.

        Data-parallel: each rank evaluates its share of the batches with rank 0's
        running statistics, and the per-batch sums are added in batch order, so the
        figures are exactly those of one process.
        """
        self.parallel.sync_buffers(self.model)  # (alone: this, merge_rows and eval_steps change nothing)
        steps = self.parallel.sampler.eval_steps(len(self.test_loader))
        rows = self.parallel.merge_rows(evaluate_batches(self.model, self.test_loader, steps))
        loss, correct, seen = sum_batches(rows)
        return loss, correct / max(seen, 1)

    def _handle_sigint(self, signum, frame):
        if self._stop_requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self._stop_requested = True
        self.log("Ctrl-C: finishing this step, saving a checkpoint, then stopping (Ctrl-C again to abort)")

    def fit(self, resume: bool = False, overwrite: bool = False) -> dict:
        """Run (or resume) training to the end; the output folder is locked until this returns.

        Args:
            resume, overwrite: see :meth:`setup`.

        Returns:
            A summary dict: ``status`` (``'done'`` / ``'interrupted'``), final ``test_acc`` and
            ``test_loss`` (when done), ``epochs``, ``seconds``, ``out``.

        Raises:
            NonFiniteLossError: the loss or the state became NaN/inf (only finite checkpoints are kept).
            RunDirError: the folder is busy, holds another run, or a write failed (disk full, permissions).
            TrainingError: the run cannot start (see messages).
        """
        if not hasattr(self, "model"):
            self.setup(resume, overwrite)
        elif self.run_dir is not None and not self.run_dir.locked:  # fit() again on a finished trainer
            self.run_dir.lock()
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict:
        start = time.time()
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._handle_sigint) if in_main else None
        try:
            status = self._run()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        writer = self.parallel.is_writer
        history = self.read_metrics() if writer else []
        result = {"status": status, "out": self.out, "epochs": self.epoch, "seconds": time.time() - start,
                  "history": history}
        if status == "done":
            self.parallel.from_writer(self._save_final_weights)
            last = self.parallel.from_writer(
                lambda: history[-1] if history and history[-1].get("epoch") == self.epoch else None)
            if last is not None:
                result.update({k: last[k] for k in ("test_acc", "test_loss", "train_acc", "train_loss")})
            else:  # the last epoch's record was lost (see _truncate_logs): measure the final weights again
                result["test_loss"], result["test_acc"] = self.evaluate()
        if self.config.plot and writer:
            path = os.path.join(self.out, "curves.png")
            try:
                with writing(path, self.out):
                    plot_curves(history, path)
            except RunDirError as exc:  # the curves are derived from metrics.jsonl: not worth failing the run
                self.log(f"warning: {exc}")
        return result

    def _run(self) -> str:
        cfg = self.config
        if self.epoch == 0 and self.step == 0:
            self.log(f"training {cfg.model} ({count_parameters(self.model):,} parameters) on "
                     f"{self.train_set.name}: {len(self.train_set)} train / {len(self.test_set)} test images, "
                     f"{cfg.epochs} epochs x {self.steps_per_epoch} steps, batch {cfg.batch_size}, device {self.device}"
                     + self.parallel.describe(cfg.batch_size))
        self.log(table_header())
        for record in (self.read_metrics() if self.parallel.is_writer else []):
            self.log(table_row(record))
        self.model.train()
        on_gpu = self.device != "cpu"
        if on_gpu:
            # labels checked once here, so cross_entropy need not read a range flag back every step
            for split in (self.train_set, self.test_set):
                labels = np.asarray(split.labels)
                if labels.size and (labels.min() < 0 or labels.max() >= split.num_classes):
                    raise TrainingError(f"{split.name}: labels outside [0, {split.num_classes}) "
                                        f"(min {labels.min()}, max {labels.max()})")
            previous_checks = set_gpu_target_checks(False)
        graph_step = None
        try:
            graph_step = self._graph_step(on_gpu)
            return self._epoch_loop(cfg, on_gpu, graph_step)
        finally:
            if graph_step is not None:
                self.log(f"CUDA graph: {graph_step.replays} replayed steps, {graph_step.eager_calls} eager steps"
                         + (f"; capture failed: {graph_step.error}" if graph_step.error else ""))
            if on_gpu:
                set_gpu_target_checks(previous_checks)

    def _epoch_loop(self, cfg, on_gpu: bool, graph_step) -> str:
        while self.epoch < cfg.epochs:
            epoch_start = time.time() - self.partial["seconds"]
            timer_start, timer_images, stop = time.time(), 0, False
            with tqdm(total=self.steps_per_epoch, initial=self.step, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                      disable=not cfg.progress or not self.parallel.is_writer, leave=False, dynamic_ncols=True) as bar:
                for step, x, y in self.train_loader.epoch(self.epoch, self.step):
                    n = self.train_loader.global_batch(step)
                    if graph_step is not None and not tracked_step(self.tracker, self.global_step).active:
                        loss_sum, correct, stop = self._graphed_train_step(graph_step, x, y, n)
                    else:
                        loss_sum, correct, stop = self._train_step(x, y, n)
                    fresh = self._count_step(loss_sum, correct, n, on_gpu)
                    self.step = step + 1
                    self.partial["seconds"] = time.time() - epoch_start
                    timer_images += n
                    seen = self.partial["seen"]
                    if fresh and seen:
                        bar.set_postfix(loss=f"{self.partial['loss_sum'] / seen:.3f}",
                                        acc=f"{self.partial['correct'] / seen:.3f}",
                                        img_s=f"{timer_images / max(time.time() - timer_start, 1e-9):.0f}",
                                        lr=f"{self.lr:.4g}", refresh=False)
                    bar.update(1)
                    if self._stopping(stop):
                        break
                    if self.global_step % cfg.checkpoint_every == 0 and self.step < self.steps_per_epoch:
                        self.save_checkpoint()
            self._flush_device_metrics()
            if self._stopping(stop):
                path = self.save_checkpoint()
                self.log(f"interrupted at epoch {self.epoch + 1}, step {self.step}: checkpoint saved to {path}; "
                         f"continue with: minires train --out {self.config.out} --resume")
                return "interrupted"
            self._finish_epoch(time.time() - epoch_start)
        return "done"

    def _stopping(self, agreed: bool) -> bool:
        """Whether to stop after this step: the flag all ranks agreed on in the step's
        allreduce (a Ctrl-C on any rank), or this process's own when it is alone."""
        return agreed if self.parallel.active else self._stop_requested

    def _finish_epoch(self, train_seconds: float) -> None:
        eval_start = time.time()
        test_loss, test_acc = self.evaluate()
        seconds = train_seconds + time.time() - eval_start
        if not math.isfinite(test_loss):
            raise self._nonfinite(f"the test loss is {test_loss} after epoch {self.epoch + 1}")
        seen = max(self.partial["seen"], 1)
        record = {
            "epoch": self.epoch + 1,
            "train_loss": self.partial["loss_sum"] / seen,
            "train_acc": self.partial["correct"] / seen,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": self.lr,
            "seconds": round(seconds, 3),
            "train_seconds": round(train_seconds, 3),
            "images_per_s": round(self.partial["seen"] / max(train_seconds, 1e-9), 1),
        }
        if self.parallel.is_writer:
            self._append_record(self.metrics_path, record)
        self.log(table_row(record))
        self.epoch += 1
        self.step = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.save_checkpoint()

