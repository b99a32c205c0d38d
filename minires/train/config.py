"""The training configuration: every knob of a run, validated, JSON round-trippable."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..data.normalization import parse_normalize

SCHEDULES = ("paper", "cosine", "linear")
DATASETS = ("cifar10", "cifar100")
DTYPES = ("float32", "float64")


@dataclass
class TrainConfig:
    """Settings of one training run (the ``minires train`` flags).

    Attributes:
        model: registry name for ``minires.models.create``.
        dataset: ``'cifar10'`` or ``'cifar100'``.
        data: ``'embedded'``, a path, or ``None`` to search the default places.
        epochs: passes over the training set.
        batch_size: training batch size.
        lr: peak learning rate.
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: L2 penalty on conv and linear weights (not BN parameters or biases).
        schedule: ``'paper'`` (/10 at 50% and 75%), ``'cosine'`` or ``'linear'`` (warm-up then linear to 0).
        warmup_frac: fraction of the steps spent warming up (linear / cosine).
        paper_warmup: ``paper`` schedule only: a warm-up at one tenth of ``lr`` (0.01 for lr 0.1) for the
            first 400 steps, as He et al. did for ResNet-110 and 1202.
        label_smoothing: cross-entropy label smoothing.
        seed: seed of initialisation, data order and augmentation.
        device: ``'cpu'`` or ``'cuda[:N]'``.
        out: output directory.
        checkpoint_every: write ``checkpoint.npz`` every this many steps (and at each epoch end).
        cutout: cutout square side (0: off).
        eval_batch_size: batch size for evaluation.
        train_subset: use only the first N training examples (0: all).
        test_subset: use only the first N test examples (0: all).
        shortcut: ``'A'`` or ``'B'`` for models that take it (None: the model's default).
        normalize: input normalisation: ``'train'`` (the training split's per-channel mean and
            std, the default), ``'cifar'``, ``'imagenet'``, ``'none'``, or ``'MEAN,STD'`` /
            ``'M1,M2,M3,S1,S2,S3'`` (see :mod:`minires.data.normalization`).
        check_md5: warn when data files differ from the official md5 sums.
        download: download the official archive when no data is found.
        progress: show tqdm progress bars.
        plot: write ``curves.png`` (when matplotlib is installed).
        sync_bn: data-parallel runs: batch-norm statistics over the global batch (all ranks)
            instead of each rank's part.
        dtype: ``'float32'``, or ``'float64'`` (slower; for exactness checks).
        track_gradients: every this many steps, record the per-block skip/branch gradient
            norms and per-parameter gradient, weight and update norms into ``gradients.jsonl``
            (:class:`~minires.analysis.GradientTracker`; 0: off).
    """

    model: str = "resnet20"
    dataset: str = "cifar10"
    data: str | None = None
    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "paper"
    warmup_frac: float = 0.0
    paper_warmup: bool = False
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/minires"
    checkpoint_every: int = 100
    cutout: int = 0
    eval_batch_size: int = 250
    train_subset: int = 0
    test_subset: int = 0
    shortcut: str | None = None
    normalize: str = "train"
    check_md5: bool = False
    download: bool = False
    progress: bool = True
    plot: bool = True
    sync_bn: bool = False
    dtype: str = "float32"
    track_gradients: int = 0

    def validate(self) -> "TrainConfig":
        """Check every value; raise ``ValueError`` naming the bad one, expected vs given."""
        for low, names in ((1, ("epochs", "batch_size", "checkpoint_every", "eval_batch_size")),
                           (0, ("cutout", "train_subset", "test_subset", "track_gradients", "seed"))):
            for name, value in ((name, getattr(self, name)) for name in names):
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ValueError(f"{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
        for name in ("lr", "momentum", "weight_decay", "warmup_frac", "label_smoothing"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name.replace('_', '-')} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("--nesterov needs a momentum > 0")
        for name in ("momentum", "warmup_frac", "label_smoothing"):
            if getattr(self, name) >= 1:
                raise ValueError(f"{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)!r}")
        for name, choices in (("schedule", SCHEDULES), ("dataset", DATASETS), ("dtype", DTYPES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.shortcut is not None and self.shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {self.shortcut!r}")
        self.normalize = parse_normalize(self.normalize)
        return self

    def to_dict(self) -> dict:
        """The configuration as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a dict (unknown keys are ignored, so older files still load)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# settings that must match when resuming (device may change, the rest decides the result)
RESUME_KEYS = ("model", "dataset", "data", "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
               "schedule", "warmup_frac", "paper_warmup", "label_smoothing", "seed", "cutout", "train_subset",
               "test_subset", "shortcut", "normalize", "sync_bn", "dtype")
