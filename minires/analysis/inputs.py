"""Inputs of the gradient-flow tools: one batch of images and labels for a seed."""

from __future__ import annotations

import numpy as np


def load_batch(data: str, batch_size: int, seed: int, num_classes: int = 10):
    """``(images float32 (N, 3, 32, 32), labels int64 (N,))`` for one seed.

    Args:
        data: ``'gaussian'``, ``'embedded'`` or a CIFAR-10 path.
        batch_size: ``N``.
        seed: picks the images (and draws the Gaussian ones).
        num_classes: label range of the Gaussian batch.
    """
    return load_batches(data, batch_size, [seed], num_classes)[seed]


def load_batches(data: str, batch_size: int, seeds, num_classes: int = 10) -> dict:
    """``{seed: load_batch(data, batch_size, seed, num_classes)}``, reading ``data`` once."""
    rngs = {seed: np.random.default_rng(seed) for seed in seeds}
    if data == "gaussian":
        return {seed: (rng.standard_normal((batch_size, 3, 32, 32)).astype(np.float32),
                       rng.integers(0, num_classes, batch_size).astype(np.int64)) for seed, rng in rngs.items()}
    from ..data import channel_stats, load_dataset, normalize  # noqa: PLC0415

    train, _ = load_dataset(data)
    if batch_size > len(train):
        raise ValueError(f"--batch-size {batch_size} exceeds the {len(train)} training images of {train.name}")
    mean, std = channel_stats(train.images)
    batches = {}
    for seed, rng in rngs.items():
        index = np.sort(rng.choice(len(train), batch_size, replace=False))
        batches[seed] = normalize(train.images[index], mean, std), train.labels[index].astype(np.int64)
    return batches
