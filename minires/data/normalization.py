"""Which per-channel mean and standard deviation inputs are normalised with.

Weights only work with the normalisation they were trained with. minires trains with
the statistics of its training split by default; published checkpoints often used
ImageNet's statistics (the akamaster CIFAR ResNets) or fixed CIFAR ones. A choice is one
string, as ``--normalize`` takes it and ``config.json`` records it:

- ``'train'``: the mean and std of the training split's pixels (minires' default);
- ``'cifar'``: the published CIFAR training-set statistics of the dataset in use;
- ``'imagenet'``: mean ``(0.485, 0.456, 0.406)``, std ``(0.229, 0.224, 0.225)``;
- ``'none'``: pixels scaled to [0, 1] only (mean 0, std 1);
- ``'MEAN,STD'`` (one value for every channel) or ``'M1,M2,M3,S1,S2,S3'``.

All values are in [0, 1] pixel units.
"""

from __future__ import annotations

import math

import numpy as np

from .augment import channel_stats

#: named fixed statistics: name -> {dataset or '*': (mean, std)}
FIXED_STATS = {
    "imagenet": {"*": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))},
    "cifar": {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
              "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))},
    "none": {"*": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))},
}
CHOICES = ("train", "cifar", "imagenet", "none")


def _parse_numbers(text: str) -> tuple[tuple, tuple]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 6) or not all(math.isfinite(v) for v in values):
        raise ValueError(f"normalize must be one of {', '.join(CHOICES)}, 'MEAN,STD' or 'M1,M2,M3,S1,S2,S3' "
                         f"(numbers in [0, 1] pixel units), got {text!r}")
    mean, std = (values[:1] * 3, values[1:] * 3) if len(values) == 2 else (values[:3], values[3:])
    if min(std) <= 0:
        raise ValueError(f"normalize {text!r}: standard deviations must be > 0")
    return tuple(mean), tuple(std)


def parse_normalize(spec) -> str:
    """Check a normalisation choice and return it in canonical form (a name, or numbers joined by commas).

    Raises:
        ValueError: not one of :data:`CHOICES` nor 2 or 6 finite numbers with positive stds.
    """
    if not isinstance(spec, str):
        raise ValueError(f"normalize must be a string such as 'train' or '0.5,0.25', got {spec!r}")
    text = spec.strip().lower()
    if text in CHOICES:
        return text
    mean, std = _parse_numbers(text)
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return f"{mean[0]:g},{std[0]:g}"
    return ",".join(f"{v:g}" for v in mean + std)


def normalization_stats(spec: str, dataset: str, train_images: np.ndarray | None = None):
    """The ``(mean, std)`` pair (``float32 (3,)``, [0, 1] units) that ``spec`` stands for.

    Args:
        spec: a choice (see the module docstring).
        dataset: ``'cifar10'`` or ``'cifar100'`` (for ``'cifar'``).
        train_images: ``uint8 (N, 3, H, W)`` training images (needed for ``'train'`` only).

    Raises:
        ValueError: a bad ``spec``, or ``'train'`` without images.
    """
    choice = parse_normalize(spec)
    if choice == "train":
        if train_images is None:
            raise ValueError("normalize 'train' needs the training images")
        return channel_stats(train_images)
    if choice in FIXED_STATS:
        table = FIXED_STATS[choice]
        if dataset not in table and "*" not in table:
            raise ValueError(f"normalize {choice!r} has no statistics for dataset {dataset!r}")
        mean, std = table.get(dataset, table.get("*"))
    else:
        mean, std = _parse_numbers(choice)
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)
