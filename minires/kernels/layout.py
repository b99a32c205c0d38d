"""Channels-last memory: NCHW-shaped arrays whose memory is ordered ``(N, H, W, C)``.

The CPU fast paths (:mod:`~minires.kernels.conv_fast`, :mod:`~minires.kernels.fused`)
keep activations in this layout (PyTorch's "channels_last"): the shape stays NCHW, the
strides are those of ``a_nhwc.transpose(0, 3, 1, 2)``, and NumPy's elementwise operations
keep it (``order='K'``).
"""

from __future__ import annotations

import numpy as np


def is_channels_last(x: np.ndarray) -> bool:
    """True when the 4-D NCHW-shaped ``x`` is stored NHWC-contiguous."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """An NCHW-shaped array as a C-contiguous ``(N, H, W, C)`` array (a view when its memory is NHWC)."""
    v = x.transpose(0, 2, 3, 1)
    return v if v.flags.c_contiguous else np.ascontiguousarray(v)


def as_channels_last(x: np.ndarray) -> np.ndarray:
    """``x`` itself when it is channels-last, else a channels-last copy (same shape and values)."""
    return x if is_channels_last(x) else to_nhwc(x).transpose(0, 3, 1, 2)


def image_rows(x: np.ndarray) -> np.ndarray:
    """A channels-last ``(N, C, H, W)`` array as its ``(N, H*W*C)`` view, one image per row."""
    N, C, H, W = x.shape
    return x.transpose(0, 2, 3, 1).reshape(N, H * W * C)   # (explicit length: N may be 0)


def empty_channels_last(shape, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A new channels-last array of NCHW ``shape`` and its :func:`image_rows` view."""
    N, C, H, W = shape
    nhwc = np.empty((N, H, W, C), dtype)
    return nhwc.transpose(0, 3, 1, 2), nhwc.reshape(N, H * W * C)


__all__ = ["is_channels_last", "to_nhwc", "as_channels_last", "image_rows", "empty_channels_last"]
