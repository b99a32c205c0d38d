"""A batch loader that keeps the whole dataset on the device and prefetches on the host.

The images stay resident as ``uint8`` on the device (numpy or cupy); a batch is a gather
plus the vectorised augmentation of :mod:`minires.data.augment`. The order of an epoch
is a pure function of ``(seed, epoch)`` and each example's augmentation a pure function
of ``(seed, epoch, example index)``, so a run can stop anywhere and continue exactly from
``(epoch, step)`` with no generator state to save, and a data-parallel rank that serves
only its part of each batch (``sampler``) prepares exactly what one process would for
those examples. A background thread prepares the next batch (on CPU: the whole batch; on
GPU: the indices and random parameters) while the current one trains.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import parse_device, to_device
from .augment import apply_augmentation, normalize, sample_params_for
from .cifar import Dataset


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled example order of one epoch (a pure function of seed and epoch)."""
    return np.random.default_rng((int(seed), 0, int(epoch))).permutation(n)


def step_generator(seed: int, epoch: int, step: int) -> np.random.Generator:
    """A generator seeded by ``(seed, epoch, step)``.

    The :class:`Loader` no longer draws augmentations per step (they are keyed by example,
    :func:`~minires.data.augment.sample_params_for`); kept for callers of the public name.
    """
    return np.random.default_rng((int(seed), 1, int(epoch), int(step)))


class Loader:
    """Batches of a :class:`~minires.data.cifar.Dataset`, augmented when ``train``.

    Args:
        dataset: the split to serve.
        batch_size: examples per batch.
        mean: per-channel mean (``(C,)``, [0, 1] units) for normalisation.
        std: per-channel standard deviation.
        train: shuffle each epoch and augment (crop, flip, cutout); otherwise serve in order.
        device: ``'cpu'`` or ``'cuda[:N]'``; the dataset is copied there once, as ``uint8``.
        seed: the seed of the shuffling and augmentation.
        padding: crop padding (0 disables the crop).
        flip: random horizontal flips.
        cutout: side of the cutout square (0 disables cutout).
        drop_last: drop a final partial batch.
        prefetch: prepare the next batch in a background thread.
        sampler: serve only part of each batch: an object whose ``split(indices)`` returns
            the part of a batch's example indices to serve (a data-parallel rank's
            :class:`~minires.distributed.sampler.DistributedSampler`); ``batch_size`` stays
            the size of the whole (global) batch.
        dtype: floating dtype of the served images (``float32``; ``float64`` for exactness checks).

    Example:
        >>> loader = Loader(train_set, 128, mean, std, train=True, seed=0)
        >>> for step, x, y in loader.epoch(0):
        ...     ...
    """

    def __init__(self, dataset: Dataset, batch_size: int, mean, std, train: bool = False, device: str = "cpu",
                 seed: int = 0, padding: int = 4, flip: bool = True, cutout: int = 0, drop_last: bool = False,
                 prefetch: bool = True, sampler=None, dtype=np.float32):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if padding < 0 or cutout < 0:
            raise ValueError(f"padding and cutout must be >= 0, got {padding} and {cutout}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.device = parse_device(device)
        self.seed = int(seed)
        self.padding = int(padding) if train else 0
        self.flip = bool(flip) and train
        self.cutout = int(cutout) if train else 0
        self.drop_last = bool(drop_last)
        self.prefetch = bool(prefetch)
        self.sampler = sampler
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype must be a floating dtype, got {self.dtype}")
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.images = to_device(np.ascontiguousarray(dataset.images), self.device)
        self.labels = to_device(np.ascontiguousarray(dataset.labels, dtype=np.int64), self.device)
        self._mean_dev = to_device(self.mean, self.device)
        self._std_dev = to_device(self.std, self.device)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def global_batch(self, step: int) -> int:
        """How many examples the whole batch of ``step`` holds (all ranks together)."""
        return min(self.batch_size, len(self.dataset) - step * self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Example indices of ``epoch`` in serving order."""
        n = len(self.dataset)
        return epoch_order(self.seed, epoch, n) if self.train else np.arange(n)

    def _host_part(self, order: np.ndarray, epoch: int, step: int):
        idx = order[step * self.batch_size:(step + 1) * self.batch_size]
        if self.sampler is not None:
            idx = self.sampler.split(idx)
        if not self.train:
            return idx, {}
        h, w = self.dataset.images.shape[2:]
        return idx, sample_params_for(self.seed, epoch, idx, h, w, self.padding, self.flip, self.cutout)

    def _device_part(self, host):
        idx, params = host
        idx = to_device(idx, self.device)
        images = self.images[idx]
        if self.train:
            x = apply_augmentation(images, params, self._mean_dev, self._std_dev, self.padding, self.cutout)
        else:
            x = normalize(images, self._mean_dev, self._std_dev)
        return x.astype(self.dtype, copy=False), self.labels[idx]

    def batch(self, epoch: int, step: int, order: np.ndarray | None = None):
        """Batch ``step`` of ``epoch``: ``(x (B, C, H, W) of dtype, y int64 (B,))`` device arrays."""
        if not 0 <= step < len(self):
            raise IndexError(f"step {step} out of range for {len(self)} batches")
        order = self.order(epoch) if order is None else order
        return self._device_part(self._host_part(order, epoch, step))

    def epoch(self, epoch: int, start_step: int = 0, steps=None):
        """Yield ``(step, x, y)`` for the steps ``start_step .. len(self) - 1`` of ``epoch``.

        ``steps`` (an increasing iterable of step numbers) serves only those (a rank's share
        of the evaluation batches).

        With ``prefetch``, the next batch is prepared in a background thread while the
        caller works on the current one (the whole batch on CPU; indices and augmentation
        parameters on GPU, where the device work stays on the calling thread).
        """
        order = self.order(epoch)
        steps = [s for s in (range(len(self)) if steps is None else steps) if start_step <= s < len(self)]
        if not self.prefetch:
            for step in steps:
                yield (step, *self._device_part(self._host_part(order, epoch, step)))
            return
        on_cpu = self.device == "cpu"

        def work(step):
            host = self._host_part(order, epoch, step)
            return self._device_part(host) if on_cpu else host

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="minires-prefetch") as pool:
            future = pool.submit(work, steps[0]) if steps else None
            for i, step in enumerate(steps):
                result = future.result()
                if i + 1 < len(steps):
                    future = pool.submit(work, steps[i + 1])
                yield (step, *(result if on_cpu else self._device_part(result)))
