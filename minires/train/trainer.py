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

import json
import math
import os
import signal
import threading
import time

import numpy as np
from tqdm.auto import tqdm

from .. import backend
from .. import config as settings
from ..analysis.tracking import GradientTracker, tracked_step
from ..autograd import Tensor
from ..backend import as_numpy, get_array_module, parse_device
from ..data import Dataset, Loader, download_cifar, load_dataset, normalization_stats
from ..data.sources import DataNotFoundError
from ..distributed import DataParallel
from .checkpoint import atomic_write, flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from .config import RESUME_KEYS, TrainConfig
from .errors import NonFiniteLossError, TrainingError
from .evaluate import evaluate_batches, evaluate_model, sum_batches, table_header, table_row
from .guard import check_checkpoint_finite, first_nonfinite, nonfinite_error, position
from .jsonl import append_jsonl, read_jsonl, write_jsonl
from .plot import plot_curves
from .run_dir import CHECKPOINT, CONFIG, GRADIENTS, RunDirectory, RunDirError, unreadable_checkpoint, writing
from .setup import build_model, build_optimizer, check_model_name, check_splits, count_parameters

FORMAT_VERSION = 1


class Trainer:
    """Train one model on one dataset as described by a :class:`TrainConfig`.

    Args:
        config: the run's settings.
        log: where human-readable lines go (default ``tqdm.write``, which keeps bars intact).
        comm: the :class:`~minires.distributed.communicator.Communicator` of a data-parallel
            run (default: one process). On ranks other than 0 nothing is logged or written.

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
        return _subset(train_set, cfg.train_subset), _subset(test_set, cfg.test_subset)

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
        check_model_name(self.config.model)
        if self.parallel.active:
            self.parallel.check_ranks_agree(
                {k: v for k, v in self.config.to_dict().items() if k not in ("device", "progress", "plot")},
                _version())
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
        try:
            return self._claim_output(resume, overwrite)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the output folder's lock (``fit`` does this when it returns or raises)."""
        if self.run_dir is not None:
            self.run_dir.release()

    def _claim_output(self, resume: bool, overwrite: bool):
        """Claim the folder (see :meth:`RunDirectory.claim`); return the checkpoint to resume, or None."""
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

    def _write_config(self, train_set, test_set) -> None:
        info = dict(self.config.to_dict())
        info.update({
            "num_parameters": count_parameters(self.model),
            "num_classes": train_set.num_classes,
            "train_examples": len(train_set),
            "test_examples": len(test_set),
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "normalize_mean": [float(v) for v in self.mean],
            "normalize_std": [float(v) for v in self.std],
            "minires_version": _version(),
            "world_size": self.parallel.size,
        })
        text = json.dumps(info, indent=2).encode()
        path = os.path.join(self.out, CONFIG)
        with writing(path, self.out):
            atomic_write(path, lambda f: f.write(text))

    # --- checkpoints -----------------------------------------------------------------

    def _state(self) -> tuple[dict, dict]:
        arrays = {f"model/{k}": as_numpy(v) for k, v in self.model.state_dict().items()}
        meta = {
            "format": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "world_size": self.parallel.size,
            "partial": self.partial,
            "optimizer": flatten_state(self.optimizer.state_dict(), arrays, "optimizer"),
            "scheduler": flatten_state(self.scheduler.state_dict(), arrays, "scheduler"),
            "rng": {
                "minires": flatten_state(backend.get_rng_state(), arrays, "rng"),
                "numpy_global": flatten_state(np.random.get_state(), arrays, "rng"),
            },
        }
        return arrays, meta

    def save_checkpoint(self) -> str:
        """Write ``OUT/checkpoint.npz`` atomically and return its path.

        Raises:
            NonFiniteLossError: a parameter, buffer or optimizer state is NaN or infinite;
                the previous checkpoint (all finite) is kept.
            RunDirError: the file cannot be written (disk full, permissions).
        """
        self._flush_device_metrics()
        # rank 0's state is the one saved (without --sync-bn the ranks' BN statistics differ): its
        # verdict reaches every rank
        self.parallel.from_writer(self._check_state_finite)
        path = os.path.join(self.out, CHECKPOINT)
        if self.parallel.is_writer:
            with writing(path, self.out):
                save_checkpoint(path, *self._state())
        self._last_good = (self.epoch, self.step)
        return path

    def _check_state_finite(self) -> None:
        found = first_nonfinite(self.model, self.optimizer)
        if found is not None:
            kind, name, value = found
            raise self._nonfinite(f"{kind} {name} became NaN/infinite at {position(self.epoch, self.step)} "
                                  f"(it holds {value})")

    def _nonfinite(self, what: str) -> NonFiniteLossError:
        error = nonfinite_error(what, os.path.join(self.out, CHECKPOINT), self._last_good)
        error.collective = True  # (raised from values every rank shares: the global loss, rank 0's state)
        return error

    def _restore(self, arrays: dict, meta: dict) -> None:
        if meta.get("format") != FORMAT_VERSION:
            raise TrainingError(f"checkpoint format {meta.get('format')!r} is not {FORMAT_VERSION}")
        state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
        self.model.load_state_dict(state, strict=True)
        self.optimizer.load_state_dict(unflatten_state(meta["optimizer"], arrays))
        self.scheduler.load_state_dict(unflatten_state(meta["scheduler"], arrays))
        backend.set_rng_state(unflatten_state(meta["rng"]["minires"], arrays))
        np.random.set_state(unflatten_state(meta["rng"]["numpy_global"], arrays))
        self.epoch, self.step = int(meta["epoch"]), int(meta["step"])
        self.partial = dict(meta["partial"])
        note = self.parallel.resume_note(int(meta.get("world_size", 1)))
        if note:
            self.log(note)

    # --- metrics ---------------------------------------------------------------------

    @property
    def metrics_path(self) -> str:
        """``OUT/metrics.jsonl``."""
        return os.path.join(self.out, "metrics.jsonl")

    def read_metrics(self) -> list[dict]:
        """The epoch records written so far (a torn last line is left out, with a warning naming the file)."""
        return read_jsonl(self.metrics_path, warn=self._warn)

    def _warn(self, message: str) -> None:
        self.log(f"warning: {message}")

    @property
    def global_step(self) -> int:
        """Updates made so far in the whole run."""
        return self.epoch * self.steps_per_epoch + self.step

    def _truncate_logs(self) -> None:
        """Keep only the records the checkpoint already covers (a killed run may have written more)."""
        records = [r for r in self.read_metrics() if r.get("epoch", 0) <= self.epoch]
        with writing(self.metrics_path, self.out):
            write_jsonl(self.metrics_path, records)
        missing = sorted(set(range(1, self.epoch + 1)) - {r.get("epoch") for r in records})
        if missing:
            self.log(f"warning: {self.metrics_path} lacks the records of epoch(s) {', '.join(map(str, missing))}, "
                     f"which {CHECKPOINT} covers; the table and curves will miss them")
        gradients = self.run_dir.file(GRADIENTS)
        if os.path.isfile(gradients):
            kept = [r for r in read_jsonl(gradients, warn=self._warn) if r.get("step", 0) < self.global_step]
            with writing(gradients, self.out):
                write_jsonl(gradients, kept)

    def _append_metrics(self, record: dict) -> None:
        with writing(self.metrics_path, self.out):
            append_jsonl(self.metrics_path, record)

    # --- the loop --------------------------------------------------------------------

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
            xp = get_array_module(logits.data)
            correct = xp.sum(xp.argmax(logits.data, axis=1) == y)
            on_gpu = self.device != "cpu"
            loss_sum, correct, stop = self.parallel.reduce_step(loss_sum, correct if on_gpu else int(correct),
                                                                self._stop_requested)
            if self.parallel.active and not on_gpu:  # the global mean loss: every rank decides alike
                self._check_loss_finite(loss_sum / batch)
            if tracked.active:  # before the update: the step's (summed) gradients and weights
                mean_loss = float(loss_sum) / batch if self.parallel.active else float(loss.item())
                tracked.measure(epoch=self.epoch + 1, loss=mean_loss, lr=self.lr)
            self.optimizer.step()
        if tracked.record is not None and self.parallel.is_writer:
            gradients = self.run_dir.file(GRADIENTS)
            with writing(gradients, self.out):
                append_jsonl(gradients, tracked.record)
        self.scheduler.step()
        return loss_sum, correct, stop

    def _forward_backward(self, x, y, batch: int):
        """Forward, loss and backward of this rank's part of a batch: ``(logits, loss, summed loss)``.

        The backward pass carries this rank's share of the global mean loss (``part / batch``).
        """
        from .. import functional as F  # noqa: PLC0415

        logits = self.model(Tensor(x))
        loss = F.cross_entropy(logits, Tensor(y), label_smoothing=self.config.label_smoothing)
        on_gpu = self.device != "cpu"
        alone = not self.parallel.active
        if on_gpu:
            # no host read inside a GPU step: the loss stays on the device (see _accumulate_device)
            loss_sum = loss.data.astype(np.float64) * len(y)
        else:
            loss_sum = float(loss.item()) * len(y)
            if alone:
                self._check_loss_finite(loss_sum / len(y))
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

    def evaluate(self) -> tuple[float, float]:
        """Mean loss and accuracy on the test split, in eval mode without gradients.

        Data-parallel: each rank evaluates its share of the batches with rank 0's
        running statistics, and the per-batch sums are added in batch order, so the
        figures are exactly those of one process.
        """
        if not self.parallel.active:
            loss, correct, seen = evaluate_model(self.model, self.test_loader)
        else:
            self.parallel.sync_buffers(self.model)
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
            else:  # the last epoch's record was lost (see _truncate_metrics): measure the final weights again
                result["test_loss"], result["test_acc"] = self.evaluate()
        if self.config.plot and writer:
            path = os.path.join(self.out, "curves.png")
            try:
                with writing(path, self.out):
                    plot_curves(history, path)
            except RunDirError as exc:  # the curves are derived from metrics.jsonl: not worth failing the run
                self.log(f"warning: {exc}")
        return result

    def _save_final_weights(self) -> None:
        """``OUT/model.npz``: the final weights with state-dict names, all finite, written atomically."""
        from ..io import write_npz  # noqa: PLC0415

        self._check_state_finite()
        arrays = {k: as_numpy(v) for k, v in self.model.state_dict().items()}
        path = os.path.join(self.out, "model.npz")
        with writing(path, self.out):
            atomic_write(path, lambda f: write_npz(arrays, f))

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
            from ..ops.loss import set_gpu_target_checks  # noqa: PLC0415

            for split in (self.train_set, self.test_set):
                labels = np.asarray(split.labels)
                if labels.size and (labels.min() < 0 or labels.max() >= split.num_classes):
                    raise TrainingError(f"{split.name}: labels outside [0, {split.num_classes}) "
                                        f"(min {labels.min()}, max {labels.max()})")
            previous_checks = set_gpu_target_checks(False)
        try:
            return self._epochs(cfg, on_gpu)
        finally:
            if on_gpu:
                set_gpu_target_checks(previous_checks)

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

    def _step_arrays(self, x, y):
        """Forward, loss, backward and update on device arrays; returns device scalars (loss, hits)."""
        from .. import functional as F  # noqa: PLC0415

        logits = self.model(Tensor(x))
        loss = F.cross_entropy(logits, Tensor(y), label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        xp = get_array_module(logits.data)
        return loss.data, xp.sum(xp.argmax(logits.data, axis=1) == y)

    def _epochs(self, cfg, on_gpu: bool) -> str:
        graph_step = self._graph_step(on_gpu)
        try:
            return self._epoch_loop(cfg, on_gpu, graph_step)
        finally:
            if graph_step is not None:
                self.log(f"CUDA graph: {graph_step.replays} replayed steps, {graph_step.eager_calls} eager steps"
                         + (f"; capture failed: {graph_step.error}" if graph_step.error else ""))

    def _epoch_loop(self, cfg, on_gpu: bool, graph_step) -> str:
        while self.epoch < cfg.epochs:
            epoch_start = time.time() - self.partial["seconds"]
            bar = tqdm(total=self.steps_per_epoch, initial=self.step, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       disable=not cfg.progress or not self.parallel.is_writer, leave=False, dynamic_ncols=True)
            timer_start, timer_images, stop = time.time(), 0, False
            with bar:
                for step, x, y in self.train_loader.epoch(self.epoch, self.step):
                    n = self.train_loader.global_batch(step)
                    if graph_step is not None and not tracked_step(self.tracker, self.global_step).active:
                        lrs = tuple(float(g["lr"]) for g in self.optimizer.param_groups)
                        loss_value, correct = graph_step(x, y, variant=lrs)
                        loss_sum, stop = loss_value.astype(np.float64) * n, self._stop_requested
                        self.scheduler.step()
                    else:
                        loss_sum, correct, stop = self._train_step(x, y, n)
                    if on_gpu:
                        self._accumulate_device(loss_sum, correct, n)
                        fresh = (self._pending["steps"] >= self.GPU_SYNC_EVERY and self._flush_device_metrics())
                    else:
                        self.partial["loss_sum"] += loss_sum
                        self.partial["correct"] += correct
                        self.partial["seen"] += n
                        fresh = True
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
                    global_step = self.epoch * self.steps_per_epoch + self.step
                    if self._stopping(stop):
                        break
                    if global_step % cfg.checkpoint_every == 0 and self.step < self.steps_per_epoch:
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
            self._append_metrics(record)
        self.log(table_row(record))
        self.epoch += 1
        self.step = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.save_checkpoint()


def _subset(data, n: int):
    """The first ``n`` examples of a dataset (all when ``n`` is 0 or larger than the set)."""
    if not n or n >= len(data):
        return data
    return Dataset(data.images[:n], data.labels[:n], data.classes, f"{data.name}, first {n}")


def _version() -> str:
    from .. import __version__  # noqa: PLC0415

    return __version__
