"""The embedded CIFAR-10 subset shipped inside the package (``--data embedded``).

The file ``minires/data/embedded/cifar10_subset.npz`` holds a class-balanced subset of
real CIFAR-10 images, losslessly coded to fit in a few megabytes:

1. colour decorrelation: planes ``G``, ``R - G``, ``B - G``;
2. per plane, the median edge detector of LOCO-I / JPEG-LS predicts each pixel from its
   left, upper and upper-left neighbours, and the prediction error (mod 256) is stored;
3. ``np.savez_compressed`` deflates the error planes (they are mostly small numbers).

Decoding reverses the steps (a raster-order loop over the 32x32 pixel positions,
vectorised over images), bit-exact. ``scripts/build_embedded.py`` rebuilds the file.
"""

from __future__ import annotations

import os

import numpy as np

from .cifar import CIFAR10_CLASSES, Dataset

EMBEDDED_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded", "cifar10_subset.npz")
CODEC = "loco-med-gdiff-v1"


def _med(left, up, upleft):
    """LOCO-I median edge detector prediction (int arrays)."""
    hi = np.maximum(left, up)
    lo = np.minimum(left, up)
    return np.where(upleft >= hi, lo, np.where(upleft <= lo, hi, left + up - upleft))


def _neighbours(plane):
    """Left, up, up-left neighbours with the edge convention used by encoder and decoder."""
    left = np.zeros_like(plane)
    up = np.zeros_like(plane)
    upleft = np.zeros_like(plane)
    left[..., :, 1:] = plane[..., :, :-1]
    up[..., 1:, :] = plane[..., :-1, :]
    upleft[..., 1:, 1:] = plane[..., :-1, :-1]
    # first column: predict from above; first row: from the left
    left[..., 1:, 0] = up[..., 1:, 0]
    up[..., 0, 1:] = left[..., 0, 1:]
    upleft[..., 0, :] = left[..., 0, :]
    upleft[..., 1:, 0] = up[..., 1:, 0]
    return left, up, upleft


def encode_images(images: np.ndarray) -> np.ndarray:
    """Code ``uint8 (N, 3, H, W)`` RGB images to prediction-error planes (same shape, uint8)."""
    x = images.astype(np.int16)
    planes = np.stack([x[:, 1], x[:, 0] - x[:, 1], x[:, 2] - x[:, 1]], axis=1)  # G, R-G, B-G
    left, up, upleft = _neighbours(planes)
    return ((planes - _med(left, up, upleft)) % 256).astype(np.uint8)


def decode_images(residuals: np.ndarray) -> np.ndarray:
    """Invert :func:`encode_images` exactly: prediction-error planes back to RGB ``uint8``."""
    e = residuals.astype(np.int16)
    n, _, height, width = e.shape
    planes = np.zeros((n, 3, height, width), np.int16)  # true G, R-G, B-G values
    for i in range(height):
        for j in range(width):
            if i == 0 and j == 0:
                pred = np.zeros((n, 3), np.int16)
            elif i == 0:
                pred = planes[:, :, 0, j - 1]
            elif j == 0:
                pred = planes[:, :, i - 1, 0]
            else:
                pred = _med(planes[:, :, i, j - 1], planes[:, :, i - 1, j], planes[:, :, i - 1, j - 1])
            value = (e[:, :, i, j] + pred) % 256  # G exactly; R-G and B-G modulo 256
            g = value[:, 0]
            planes[:, 0, i, j] = g
            # recover the signed differences through the colour values they encode
            planes[:, 1, i, j] = (value[:, 1] + g) % 256 - g
            planes[:, 2, i, j] = (value[:, 2] + g) % 256 - g
    green = planes[:, 0]
    return np.stack([planes[:, 1] + green, green, planes[:, 2] + green], axis=1).astype(np.uint8)


_CACHE: dict = {}


def load_embedded(path: str = EMBEDDED_PATH):
    """Load the embedded CIFAR-10 subset (decoded once per process; the arrays are read-only).

    Returns:
        ``(train, test)`` :class:`~minires.data.cifar.Dataset` pair of real CIFAR-10 images.

    Raises:
        FileNotFoundError: the package was installed without its data file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"the embedded CIFAR-10 subset is missing ({path}); reinstall minires or rebuild it with "
            "scripts/build_embedded.py")
    key = (os.path.abspath(path), os.path.getmtime(path))
    if key not in _CACHE:
        _CACHE[key] = _decode_file(path)
    return tuple(Dataset(images, labels, CIFAR10_CLASSES, f"embedded CIFAR-10 subset {split} ({len(images)} images)")
                 for split, (images, labels) in zip(("train", "test"), _CACHE[key]))


def _decode_file(path: str):
    with np.load(path, allow_pickle=False) as f:
        codec = bytes(f["codec"]).decode()
        if codec != CODEC:
            raise ValueError(f"{path}: unknown codec {codec!r}, expected {CODEC!r}")
        out = []
        for split in ("train", "test"):
            images = decode_images(f[f"{split}_residuals"])
            labels = f[f"{split}_labels"].astype(np.int64)
            for array in (images, labels):
                array.flags.writeable = False
            out.append((images, labels))
    return out
