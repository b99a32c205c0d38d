"""Elementwise activations: ReLU and sigmoid, forward and backward.

PyTorch semantics, NaN included:

- ``relu(x) = max(x, 0)``; ``relu(nan) = nan``.
- ``relu_backward(grad, out) = 0 where out <= 0 else grad`` (PyTorch's
  ``threshold_backward`` on the output): where the input was NaN the gradient passes,
  and a NaN gradient at a masked position becomes 0 (a select, not a multiply).
- ``sigmoid(x) = 1 / (1 + exp(-x))``, computed with ``e = exp(-|x|)`` as ``1 / (1 + e)`` for
  ``x >= 0`` and ``e / (1 + e)`` otherwise, so it never overflows and keeps full relative
  precision for very negative ``x``; ``sigmoid_backward(grad, out) = grad * out * (1 - out)``.

Each kernel has a CPU function (NumPy), a GPU twin (a named, memoised CuPy
``ElementwiseKernel``: one pass, no temporaries) and a dispatcher that picks one by the
array type.
"""

from __future__ import annotations

import numpy as np

from .. import backend

# --- CPU ---------------------------------------------------------------------------------


def relu_forward_cpu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)`` on NumPy (NaN stays NaN)."""
    return np.maximum(x, x.dtype.type(0))


_SAME_SIZE_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def keep_where_cpu(keep: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` where ``keep`` else 0, as a new array (NumPy, branch-free).

    The same as ``np.where(keep, values, 0)`` bit for bit (a NaN at a dropped position
    becomes 0, unlike ``values * keep``), but it ANDs the bits of ``values`` with an
    all-ones / all-zeros mask, which is several times faster than ``np.where`` on an
    unpredictable mask.
    """
    uint = _SAME_SIZE_UINT.get(values.dtype.itemsize)
    if uint is None or values.dtype.kind != "f":
        return np.where(keep, values, values.dtype.type(0))
    keep, values = np.broadcast_arrays(keep, values)
    mask = keep.astype(uint)
    np.negative(mask, out=mask)  # 1 -> all bits set, 0 -> 0
    mask &= values.view(uint)
    return mask.view(values.dtype)


def relu_backward_cpu(grad: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Gradient of ReLU given its output: ``0 where out <= 0 else grad``."""
    return keep_where_cpu(~(out <= 0), grad)


def sigmoid_forward_cpu(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` on NumPy, overflow-free."""
    e = np.exp(-np.abs(x))
    numerator = np.where(x >= 0, x.dtype.type(1), e)  # NaN fails x >= 0 and keeps e = NaN
    e += 1
    numerator /= e
    return numerator


def sigmoid_backward_cpu(grad: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Gradient of the sigmoid given its output: ``grad * out * (1 - out)``."""
    return grad * out * (1 - out)


# --- GPU (CuPy) --------------------------------------------------------------------------


def relu_forward_gpu(x):
    """``max(x, 0)`` on CuPy (NaN stays NaN)."""
    kernel = backend.elementwise_kernel(
        "minires_relu_forward", "T x", "T y", "y = (x > (T)0 || isnan(x)) ? x : (T)0")
    return kernel(x)


def relu_backward_gpu(grad, out):
    """Gradient of ReLU given its output, on CuPy: ``0 where out <= 0 else grad``."""
    kernel = backend.elementwise_kernel(
        "minires_relu_backward", "T g, T y", "T gx", "gx = (y <= (T)0) ? (T)0 : g")
    return kernel(grad, out)


def sigmoid_forward_gpu(x):
    """``1 / (1 + exp(-x))`` on CuPy, one fused pass."""
    kernel = backend.elementwise_kernel(
        "minires_sigmoid_forward", "T x", "T y", "T e = exp(-fabs(x)); y = (x >= (T)0 ? (T)1 : e) / ((T)1 + e)")
    return kernel(x)


def sigmoid_backward_gpu(grad, out):
    """Gradient of the sigmoid given its output, on CuPy, one fused pass."""
    kernel = backend.elementwise_kernel(
        "minires_sigmoid_backward", "T g, T y", "T gx", "gx = g * y * ((T)1 - y)")
    return kernel(grad, out)


# --- dispatchers -------------------------------------------------------------------------


def relu_forward(x):
    """``max(x, 0)`` elementwise (NumPy or CuPy array in, same kind out)."""
    if backend.is_cupy_array(x):
        return relu_forward_gpu(x)
    from .fused import relu_forward_parallel  # noqa: PLC0415 - large arrays split across threads
    out = relu_forward_parallel(x)
    return relu_forward_cpu(x) if out is None else out


def relu_backward(grad, out):
    """ReLU gradient from the upstream ``grad`` and the forward output ``out``."""
    if backend.is_cupy_array(grad):
        return relu_backward_gpu(grad, out)
    from .fused import relu_backward_parallel  # noqa: PLC0415 - large arrays split across threads
    result = relu_backward_parallel(grad, out)
    return relu_backward_cpu(grad, out) if result is None else result


def sigmoid_forward(x):
    """``1 / (1 + exp(-x))`` elementwise (NumPy or CuPy array in, same kind out)."""
    return sigmoid_forward_gpu(x) if backend.is_cupy_array(x) else sigmoid_forward_cpu(x)


def sigmoid_backward(grad, out):
    """Sigmoid gradient from the upstream ``grad`` and the forward output ``out``."""
    if backend.is_cupy_array(grad):
        return sigmoid_backward_gpu(grad, out)
    return sigmoid_backward_cpu(grad, out)


__all__ = [
    "keep_where_cpu", "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
    "relu_forward_cpu", "relu_backward_cpu", "sigmoid_forward_cpu", "sigmoid_backward_cpu",
    "relu_forward_gpu", "relu_backward_gpu", "sigmoid_forward_gpu", "sigmoid_backward_gpu",
]
