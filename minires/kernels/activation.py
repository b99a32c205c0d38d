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
array type. ReLU is a :class:`~minires.kernels.dispatch.KernelFamily` (:data:`RELU`): on
large NumPy arrays the ``'threads'`` implementation splits the same computation across
threads, keeping the array's memory order.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from .dispatch import KernelFamily, KernelImplementation, twin
from .layout import is_channels_last
from .parallel import for_each_chunk

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


def relu_backward_cpu(grad: np.ndarray, out: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
    """Gradient of ReLU given its output: ``0 where out <= 0 else grad`` (written into ``into`` when given).

    A select, as :func:`keep_where_cpu` (a NaN gradient where ``out <= 0`` becomes 0), in four
    branch-free passes: the bits of ``grad`` ANDed with ``(out <= 0) - 1`` (all ones where kept).
    """
    uint = _SAME_SIZE_UINT.get(grad.dtype.itemsize)
    if uint is None or grad.dtype.kind != "f":
        result = np.where(out <= 0, grad.dtype.type(0), grad)
        if into is None:
            return result
        into[...] = result
        return into
    bits = np.less_equal(out, out.dtype.type(0)).astype(uint)
    np.subtract(bits, uint(1), out=bits)
    if into is None:
        return np.bitwise_and(bits, grad.view(uint), out=bits).view(grad.dtype)
    np.bitwise_and(bits, grad.view(uint), out=into.view(uint))
    return into


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


# --- ReLU split across threads (large NumPy arrays) ----------------------------------------

#: elements per chunk (a few hundred KiB) and the smallest array worth splitting
_RELU_PIECE = 1 << 16
_RELU_MIN = 1 << 20


def _flat_same_order(*arrays):
    """1-D views of arrays that share one memory order (C or channels-last), else None."""
    if all(a.flags.c_contiguous for a in arrays):
        return [a.reshape(-1) for a in arrays]
    if all(is_channels_last(a) for a in arrays):
        return [a.transpose(0, 2, 3, 1).reshape(-1) for a in arrays]
    return None


def relu_threads_supports(*arrays) -> bool:
    """The threaded ReLU applies to large float NumPy arrays of one shape, dtype and memory order."""
    first = arrays[0]
    return (type(first) is np.ndarray and first.dtype.kind == "f" and first.size >= _RELU_MIN
            and all(type(a) is np.ndarray and a.shape == first.shape and a.dtype == first.dtype for a in arrays)
            and _flat_same_order(*arrays) is not None)


def relu_forward_threads(x: np.ndarray) -> np.ndarray:
    """:func:`relu_forward_cpu` chunk by chunk across threads, keeping ``x``'s memory order."""
    out = np.empty_like(x)
    src, dst = _flat_same_order(x, out)
    zero = x.dtype.type(0)
    for_each_chunk(lambda lo, hi: np.maximum(src[lo:hi], zero, out=dst[lo:hi]), src.size, _RELU_PIECE)
    return out


def relu_backward_threads(grad: np.ndarray, out: np.ndarray) -> np.ndarray:
    """:func:`relu_backward_cpu` chunk by chunk across threads."""
    result = np.empty_like(out)
    g, o, r = _flat_same_order(grad, out, result)
    for_each_chunk(lambda lo, hi: relu_backward_cpu(g[lo:hi], o[lo:hi], into=r[lo:hi]), g.size, _RELU_PIECE)
    return result


#: ReLU's implementations: the reference (NumPy, or its CuPy twin) and 'threads'
RELU = KernelFamily("relu", KernelImplementation("reference", twin(relu_forward_cpu, relu_forward_gpu),
                                                 twin(relu_backward_cpu, relu_backward_gpu)))
RELU.register(KernelImplementation("threads", relu_forward_threads, relu_backward_threads, relu_threads_supports))


# --- dispatchers -------------------------------------------------------------------------


def relu_forward(x, *, algorithm: str | None = None):
    """``max(x, 0)`` elementwise (NumPy or CuPy array in, same kind out)."""
    return RELU.select(x, algorithm=algorithm).forward(x)


def relu_backward(grad, out, *, algorithm: str | None = None):
    """ReLU gradient from the upstream ``grad`` and the forward output ``out``."""
    return RELU.select(grad, out, algorithm=algorithm).backward(grad, out)


#: ``1 / (1 + exp(-x))`` elementwise, and its gradient from the upstream ``grad`` and the output ``out``
sigmoid_forward = twin(sigmoid_forward_cpu, sigmoid_forward_gpu)
sigmoid_backward = twin(sigmoid_backward_cpu, sigmoid_backward_gpu)


__all__ = [
    "RELU", "relu_forward_threads", "relu_backward_threads", "relu_threads_supports", "keep_where_cpu",
    "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
    "relu_forward_cpu", "relu_backward_cpu", "sigmoid_forward_cpu", "sigmoid_backward_cpu",
    "relu_forward_gpu", "relu_backward_gpu", "sigmoid_forward_gpu", "sigmoid_backward_gpu",
]
