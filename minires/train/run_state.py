"""What a training run keeps on disk: checkpoint capture and restore, ``config.json``,
``metrics.jsonl`` and ``gradients.jsonl``, the final weights, and the finiteness checks
that guard every one of them.

:class:`RunState` is a mixin of :class:`~minires.train.trainer.Trainer`: it reads the
trainer's ``model``, ``optimizer``, ``scheduler``, ``parallel``, ``epoch``, ``step``,
``partial``, ``out`` and ``run_dir`` (set up by ``Trainer.setup``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from .. import __version__, backend
from ..backend import as_numpy
from .checkpoint import atomic_write, flatten_state, save_checkpoint, unflatten_state
from .errors import NonFiniteLossError, TrainingError
from .guard import first_nonfinite, nonfinite_error, position
from .jsonl import append_jsonl, read_jsonl, write_jsonl
from .run_dir import CHECKPOINT, CONFIG, GRADIENTS, writing
from .setup import count_parameters

FORMAT_VERSION = 1


class RunState:
    """Checkpoints, run files and finiteness checks of a :class:`~minires.train.trainer.Trainer`."""

    # --- config.json -----------------------------------------------------------------

    def _write_config(self, train_set, test_set) -> None:
        info = {
            **self.config.to_dict(),
            "num_parameters": count_parameters(self.model),
            "num_classes": train_set.num_classes,
            "train_examples": len(train_set),
            "test_examples": len(test_set),
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "normalize_mean": [float(v) for v in self.mean],
            "normalize_std": [float(v) for v in self.std],
            "minires_version": __version__,  # (every rank must run the same)
            "world_size": self.parallel.size,
        }
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

    def _save_final_weights(self) -> None:
        """``OUT/model.npz``: the final weights with state-dict names, all finite, written atomically."""
        from ..io import write_npz  # noqa: PLC0415

        self._check_state_finite()
        arrays = {k: as_numpy(v) for k, v in self.model.state_dict().items()}
        path = os.path.join(self.out, "model.npz")
        with writing(path, self.out):
            atomic_write(path, lambda f: write_npz(arrays, f))

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

    def _append_record(self, path: str, record: dict) -> None:
        with writing(path, self.out):
            append_jsonl(path, record)
