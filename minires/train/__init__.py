"""Training: configuration, the loop with metrics and progress bars, atomic checkpoints, exact resume, run figures.

Example:
    >>> from minires.train import TrainConfig, Trainer
    >>> result = Trainer(TrainConfig(model="resnet20", data="embedded", epochs=2, out="runs/demo")).fit()
    >>> print(result["test_acc"])
"""

from .checkpoint import atomic_write, flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from .config import SCHEDULES, TrainConfig
from .plot import RunRecords, load_run, plot_curves, plot_runs
from .setup import build_model, build_optimizer, build_schedule, count_parameters
from .errors import NonFiniteLossError, TrainingError
from .evaluate import evaluate_model
from .jsonl import JsonlError, append_jsonl, read_jsonl, write_jsonl
from .run_dir import RunDirectory, RunDirError, RunDirLockedError
from .trainer import Trainer
from .weights import WeightsMismatchError, load_weights_strict

__all__ = [
    "TrainConfig", "Trainer", "TrainingError", "NonFiniteLossError", "evaluate_model", "save_checkpoint",
    "load_checkpoint", "atomic_write", "flatten_state", "unflatten_state", "build_model", "build_optimizer",
    "build_schedule", "count_parameters", "plot_curves", "plot_runs", "load_run", "RunRecords", "SCHEDULES",
    "RunDirectory", "RunDirError", "RunDirLockedError", "append_jsonl", "read_jsonl", "write_jsonl", "JsonlError",
    "WeightsMismatchError", "load_weights_strict",
]
