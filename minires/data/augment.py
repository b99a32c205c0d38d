"""Batched, vectorised CIFAR augmentation on NumPy or CuPy arrays.

Every function takes a whole batch ``(N, C, H, W)`` and works through
``get_array_module``, so the same code runs on CPU and GPU with no per-image Python loop.
The random parameters (crop offsets, flip flags, cutout centres) are drawn on the host.
:func:`sample_params_for` draws them per example from a counter-based hash of
``(seed, epoch, example index)``, so an example's augmentation in an epoch does not
depend on which batch, which rank or which position it lands in: resuming mid-epoch is
exact, CPU and GPU runs see the same augmentations, and data-parallel runs augment each
example as one process does at any world size. :func:`sample_params` draws a batch's
parameters from a NumPy generator instead.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module, to_device, array_device


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``uint8 (N, C, H, W)`` images, in [0, 1] units.

    Returns:
        ``(mean, std)``, each ``float32 (C,)``: ``mean_c = E[x/255]``, ``std_c = sqrt(Var[x/255])``.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {images.shape}")
    n, c = images.shape[:2]
    total = np.zeros(c, np.float64)
    total_sq = np.zeros(c, np.float64)
    for start in range(0, n, 4096):  # chunks keep the float64 copy small
        chunk = np.asarray(images[start:start + 4096], dtype=np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += (chunk * chunk).sum(axis=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def random_crop(images, offsets, padding: int = 4):
    """Crop each image from its zero-padded copy at the given offsets.

    Args:
        images: ``(N, C, H, W)`` array.
        offsets: int array ``(N, 2)``: row and column of the window's top-left corner in the
            padded image, each in ``[0, 2 * padding]`` (``padding`` means no shift).
        padding: zero padding on each side.

    Returns:
        ``(N, C, H, W)`` array: ``out[n, :, i, j] = padded[n, :, i + offsets[n, 0], j + offsets[n, 1]]``.
    """
    xp = get_array_module(images)
    n, c, h, w = images.shape
    offsets = xp.asarray(offsets)
    if offsets.shape != (n, 2):
        raise ValueError(f"expected offsets of shape ({n}, 2), got {offsets.shape}")
    if padding == 0:
        return images
    padded = xp.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    rows = offsets[:, 0:1] + xp.arange(h)  # (N, H)
    cols = offsets[:, 1:2] + xp.arange(w)  # (N, W)
    return padded[xp.arange(n)[:, None, None, None], xp.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def horizontal_flip(images, flip):
    """Mirror the images where ``flip`` (bool ``(N,)``) is set: ``out[n, :, :, j] = x[n, :, :, W-1-j]``."""
    xp = get_array_module(images)
    flip = xp.asarray(flip, dtype=bool)
    return xp.where(flip[:, None, None, None], images[..., ::-1], images)


def normalize(images, mean, std):
    """``uint8`` images to ``float32`` ``(x / 255 - mean_c) / std_c``."""
    xp = get_array_module(images)
    mean = xp.asarray(mean, dtype=xp.float32).reshape(1, -1, 1, 1)
    inv_std = (1.0 / xp.asarray(std, dtype=xp.float32)).reshape(1, -1, 1, 1)
    out = images.astype(xp.float32)
    out *= xp.float32(1.0 / 255.0)
    out -= mean
    out *= inv_std
    return out


def cutout(images, centers, size: int):
    """Zero a ``size x size`` square around each centre (clipped at the borders; DeVries & Taylor 2017).

    Args:
        images: ``(N, C, H, W)`` array (usually already normalised, so zero is the mean).
        centers: int array ``(N, 2)``: centre row and column, each in ``[0, H)`` / ``[0, W)``.
        size: side of the square; rows ``[cy - size//2, cy - size//2 + size)`` are cut.
    """
    xp = get_array_module(images)
    n, _, h, w = images.shape
    centers = xp.asarray(centers)
    top = centers[:, 0:1] - size // 2
    left = centers[:, 1:2] - size // 2
    r = xp.arange(h)[None, :]
    col = xp.arange(w)[None, :]
    in_rows = (r >= top) & (r < top + size)  # (N, H)
    in_cols = (col >= left) & (col < left + size)  # (N, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return images * keep[:, None, :, :].astype(images.dtype)


def sample_params(rng: np.random.Generator, n: int, height: int = 32, width: int = 32, padding: int = 4,
                  flip: bool = True, cutout_size: int = 0) -> dict:
    """Draw the random parameters of one batch on the host.

    Returns:
        dict with ``offsets`` (int64 ``(N, 2)`` in ``[0, 2*padding]``), ``flip`` (bool ``(N,)``)
        and ``centers`` (int64 ``(N, 2)``) where the corresponding augmentation is enabled.
    """
    params = {}
    if padding > 0:
        params["offsets"] = rng.integers(0, 2 * padding + 1, size=(n, 2), dtype=np.int64)
    if flip:
        params["flip"] = rng.random(n) < 0.5
    if cutout_size > 0:
        params["centers"] = np.stack([rng.integers(0, height, n), rng.integers(0, width, n)], axis=1)
    return params


# splitmix64's output function (Steele, Lea & Flood 2014): a bijection of 64-bit integers
# whose outputs pass statistical tests even for consecutive inputs; NumPy wraps uint64
# arithmetic of arrays modulo 2**64
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15
# one independent stream per random quantity, so turning cutout on leaves the crops alone
_STREAMS = {"offset_row": 1, "offset_col": 2, "flip": 3, "center_row": 4, "center_col": 5}


def _mix64(z: np.ndarray) -> np.ndarray:
    z = z ^ (z >> np.uint64(30))
    z = z * _MIX1
    z = z ^ (z >> np.uint64(27))
    z = z * _MIX2
    return z ^ (z >> np.uint64(31))


def _add_constant(z: np.ndarray, value: int) -> np.ndarray:
    return z + np.full(1, value % 2 ** 64, np.uint64)


def sample_keys(seed: int, epoch: int, indices) -> np.ndarray:
    """One 64-bit random key per example: a hash of ``(seed, epoch, index)`` (``uint64 (N,)``)."""
    base = _mix64(_add_constant(np.full(1, int(seed), np.uint64), _GOLDEN))
    base = _mix64(_add_constant(base, int(epoch) * _GOLDEN + 1))
    indices = np.asarray(indices, np.int64).astype(np.uint64)
    return _mix64(base + indices * np.uint64(_GOLDEN))


def _uniform_ints(keys: np.ndarray, stream: str, high: int) -> np.ndarray:
    """Integers uniform in ``[0, high)``, one per key, from the named stream (int64)."""
    bits = _mix64(_add_constant(keys, _STREAMS[stream] * _GOLDEN))
    unit = (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53  # 53 random bits in [0, 1)
    return np.floor(unit * high).astype(np.int64)


def sample_params_for(seed: int, epoch: int, indices, height: int = 32, width: int = 32, padding: int = 4,
                      flip: bool = True, cutout_size: int = 0) -> dict:
    """The random parameters of the examples ``indices`` in ``epoch``, each a pure function of
    ``(seed, epoch, index)`` (vectorised: no generator per example).

    Returns:
        The dict of :func:`sample_params`: ``offsets`` (int64 ``(N, 2)`` in
        ``[0, 2*padding]``), ``flip`` (bool ``(N,)``, true with probability 1/2) and
        ``centers`` (int64 ``(N, 2)`` in ``[0, H) x [0, W)``) where enabled.
    """
    keys = sample_keys(seed, epoch, indices)
    params = {}
    if padding > 0:
        side = 2 * padding + 1
        params["offsets"] = np.stack([_uniform_ints(keys, "offset_row", side),
                                      _uniform_ints(keys, "offset_col", side)], axis=1)
    if flip:
        params["flip"] = _uniform_ints(keys, "flip", 2) == 1
    if cutout_size > 0:
        params["centers"] = np.stack([_uniform_ints(keys, "center_row", height),
                                      _uniform_ints(keys, "center_col", width)], axis=1)
    return params


def apply_augmentation(images, params: dict, mean, std, padding: int = 4, cutout_size: int = 0):
    """Crop, flip, normalise and cut out a ``uint8`` batch with host-drawn ``params``.

    Returns:
        ``float32 (N, C, H, W)`` on the images' device.
    """
    device = array_device(images)
    if "offsets" in params:
        images = random_crop(images, to_device(params["offsets"], device), padding)
    if "flip" in params:
        images = horizontal_flip(images, to_device(params["flip"], device))
    out = normalize(images, mean, std)
    if "centers" in params and cutout_size > 0:
        out = cutout(out, to_device(params["centers"], device), cutout_size)
    return out
