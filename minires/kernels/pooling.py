"""2-D pooling on NCHW arrays: max (with argmax routing), average, adaptive average.

Notation: input ``(N, C, H, W)``, window ``KH x KW``, stride ``SH, SW``, padding ``PH, PW``,
output ``(N, C, OH, OW)`` with ``OH = (H + 2 PH - KH) // SH + 1`` (PyTorch's floor rule).

- **max**: padding counts as ``-inf`` (never chosen). Within a window the first maximum
  in row-major window order wins on ties, and a NaN always takes over (the last NaN in
  the window wins): PyTorch's rule ``if (v > best || isnan(v))``. A window whose real
  values are all ``-inf`` points at its first in-bounds element. The argmax is stored
  as the window offset ``k = i * KW + j`` and backward sends each output gradient to
  that pixel; overlapping windows add up.
- **average**: ``count_include_pad=True`` and ``ceil_mode=False`` (PyTorch's defaults),
  so every window divides by ``KH * KW``.
- **adaptive average**: output bin ``i`` along an axis of length ``L`` averages
  ``[floor(i L / O), ceil((i + 1) L / O))`` (PyTorch's rule). Bins may overlap or differ
  in size; the average is separable (columns first, then rows, one whole-slice mean per
  output bin) and reduces to a reshape-mean when ``O`` divides ``L``.

CPU functions loop over the ``KH * KW`` window offsets and move whole strided slices
(never single pixels). GPU twins of max and average pooling are named CuPy
``ElementwiseKernel`` objects with one thread per output element (forward) or per input
element (backward, a gather over the windows that cover it, so no atomics are needed);
adaptive pooling is generic array code that runs on both (it loops over output bins
per axis, ``OH + OW`` slice operations). Max and average pooling are kernel families
(:data:`MAX_POOL2D`, :data:`AVG_POOL2D`, see :mod:`minires.kernels.dispatch`) whose only
implementation so far is that reference; a faster one registers there.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from .activation import keep_where_cpu
from .dispatch import KernelFamily, KernelImplementation, twin
from .im2col import conv_output_size as pool_output_size


def _window(a, i: int, j: int, OH: int, OW: int, SH: int, SW: int):  # noqa: N803
    """The view ``a[:, :, oh*SH + i, ow*SW + j]`` of every window's offset ``(i, j)``, shaped ``(N, C, OH, OW)``."""
    return a[:, :, i:i + SH * (OH - 1) + 1:SH, j:j + SW * (OW - 1) + 1:SW]


def _max_pool_start(out_shape, dtype, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """``(out, argmax)`` before the first window offset: ``-inf``, and the offset of every window's first
    in-bounds element (in the smallest integer type that holds ``KH * KW``)."""
    OH, OW = out_shape[2], out_shape[3]
    first_i = np.maximum(PH - np.arange(OH) * SH, 0)
    first_j = np.maximum(PW - np.arange(OW) * SW, 0)
    out = np.full(out_shape, -np.inf, dtype=dtype)
    argmax = np.empty(out_shape, dtype=np.int8 if KH * KW <= 127 else (np.int16 if KH * KW <= 32767 else np.int32))
    argmax[...] = first_i[:, None] * KW + first_j[None, :]
    return out, argmax


def _fold_windows(x_shape, grad, KH, KW, SH, SW, PH, PW, window_grad):  # noqa: N803
    """The input gradient: ``window_grad(i, j)`` (shaped like ``grad``) added onto the pixels that every
    window's offset ``(i, j)`` read, padding dropped."""
    N, C, H, W = x_shape
    OH, OW = grad.shape[2], grad.shape[3]
    padded = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=grad.dtype)
    for i in range(KH):
        for j in range(KW):
            # within one offset every output maps to a distinct pixel, so += is exact
            window = _window(padded, i, j, OH, OW, SH, SW)
            window += window_grad(i, j)
    if PH or PW:
        return np.ascontiguousarray(padded[:, :, PH:PH + H, PW:PW + W])
    return padded


# --- CPU ---------------------------------------------------------------------------------

def max_pool2d_forward_cpu(x, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """Max pooling on NumPy; returns ``(out, argmax)`` with ``argmax`` the window offset.

    The common path is branch-free (``greater``, ``maximum`` and integer arithmetic per
    window offset); if any output is NaN the NaN-aware path recomputes everything so
    that the last NaN of a window is chosen, as PyTorch does.
    """
    N, C, H, W = x.shape
    OH, OW = pool_output_size(H, KH, SH, PH), pool_output_size(W, KW, SW, PW)
    if PH or PW:
        padded = np.full((N, C, H + 2 * PH, W + 2 * PW), -np.inf, dtype=x.dtype)
        padded[:, :, PH:PH + H, PW:PW + W] = x
    else:
        padded = x
    out, argmax = _max_pool_start((N, C, OH, OW), x.dtype, KH, KW, SH, SW, PH, PW)
    take = np.empty((N, C, OH, OW), dtype=bool)
    delta = np.empty_like(argmax)
    for i in range(KH):
        for j in range(KW):
            window = _window(padded, i, j, OH, OW, SH, SW)
            np.greater(window, out, out=take)  # strict: the first maximum keeps its place
            np.maximum(out, window, out=out)
            np.subtract(argmax.dtype.type(i * KW + j), argmax, out=delta)
            delta *= take
            argmax += delta  # argmax = k where take, unchanged elsewhere
    if np.isnan(out).any():
        return _max_pool2d_forward_nan_cpu(padded, out.shape, KH, KW, SH, SW, PH, PW)
    return out, argmax


def _max_pool2d_forward_nan_cpu(padded, out_shape, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """NaN-aware max pooling of an already padded array (PyTorch: ``v > best || isnan(v)``)."""
    out, argmax = _max_pool_start(out_shape, padded.dtype, KH, KW, SH, SW, PH, PW)
    take = np.empty(out_shape, dtype=bool)
    nan = np.empty(out_shape, dtype=bool)
    for i in range(KH):
        for j in range(KW):
            window = _window(padded, i, j, out_shape[2], out_shape[3], SH, SW)
            np.greater(window, out, out=take)
            take |= np.isnan(window, out=nan)  # a NaN always takes over
            np.copyto(out, window, where=take)
            np.copyto(argmax, i * KW + j, where=take)
    return out, argmax


def max_pool2d_backward_cpu(grad, argmax, x_shape, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """Gradient of max pooling on NumPy: each output gradient goes to its argmax pixel."""
    return _fold_windows(x_shape, grad, KH, KW, SH, SW, PH, PW, lambda i, j: keep_where_cpu(argmax == i * KW + j, grad))


def avg_pool2d_forward_cpu(x, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """Average pooling on NumPy (zero padding counted, divisor ``KH * KW``)."""
    N, C, H, W = x.shape
    OH, OW = pool_output_size(H, KH, SH, PH), pool_output_size(W, KW, SW, PW)
    padded = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW))) if (PH or PW) else x
    out = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for i in range(KH):
        for j in range(KW):
            out += _window(padded, i, j, OH, OW, SH, SW)
    out /= x.dtype.type(KH * KW)
    return out


def avg_pool2d_backward_cpu(grad, x_shape, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """Gradient of average pooling on NumPy: ``grad / (KH KW)`` spread over every window."""
    share = grad / grad.dtype.type(KH * KW)
    return _fold_windows(x_shape, grad, KH, KW, SH, SW, PH, PW, lambda i, j: share)


# --- GPU (CuPy) --------------------------------------------------------------------------

_POOL_PARAMS = "int32 H, int32 W, int32 OH, int32 OW, int32 KH, int32 KW, int32 SH, int32 SW, int32 PH, int32 PW"

_MAX_POOL_FORWARD = """
    const int ow = i % OW, oh = (i / OW) % OH, nc = i / (OW * OH);
    const int h0 = oh * SH - PH, w0 = ow * SW - PW;
    const int ih_start = max(h0, 0), iw_start = max(w0, 0);
    const int ih_end = min(h0 + KH, H), iw_end = min(w0 + KW, W);
    const T* plane = &x[(ptrdiff_t)nc * H * W];
    T best = plane[ih_start * W + iw_start];
    int best_k = (ih_start - h0) * KW + (iw_start - w0);
    for (int ih = ih_start; ih < ih_end; ++ih) {
        for (int iw = iw_start; iw < iw_end; ++iw) {
            const T v = plane[ih * W + iw];
            if (v > best || isnan(v)) { best = v; best_k = (ih - h0) * KW + (iw - w0); }
        }
    }
    y = best;
    argmax = best_k;
"""

_MAX_POOL_BACKWARD = """
    const int w = i % W, h = (i / W) % H, nc = i / (W * H);
    const int hp = h + PH, wp = w + PW;
    const int oh_start = hp < KH ? 0 : (hp - KH) / SH + 1, oh_end = min(hp / SH + 1, OH);
    const int ow_start = wp < KW ? 0 : (wp - KW) / SW + 1, ow_end = min(wp / SW + 1, OW);
    T acc = 0;
    for (int oh = oh_start; oh < oh_end; ++oh) {
        for (int ow = ow_start; ow < ow_end; ++ow) {
            const ptrdiff_t o = ((ptrdiff_t)nc * OH + oh) * OW + ow;
            if (argmax[o] == (hp - oh * SH) * KW + (wp - ow * SW)) acc += grad[o];
        }
    }
    gx = acc;
"""

_AVG_POOL_FORWARD = """
    const int ow = i % OW, oh = (i / OW) % OH, nc = i / (OW * OH);
    const int h0 = oh * SH - PH, w0 = ow * SW - PW;
    const int ih_start = max(h0, 0), iw_start = max(w0, 0);
    const int ih_end = min(h0 + KH, H), iw_end = min(w0 + KW, W);
    const T* plane = &x[(ptrdiff_t)nc * H * W];
    T acc = 0;
    for (int ih = ih_start; ih < ih_end; ++ih)
        for (int iw = iw_start; iw < iw_end; ++iw) acc += plane[ih * W + iw];
    y = acc / (T)(KH * KW);
"""

_AVG_POOL_BACKWARD = """
    const int w = i % W, h = (i / W) % H, nc = i / (W * H);
    const int hp = h + PH, wp = w + PW;
    const int oh_start = hp < KH ? 0 : (hp - KH) / SH + 1, oh_end = min(hp / SH + 1, OH);
    const int ow_start = wp < KW ? 0 : (wp - KW) / SW + 1, ow_end = min(wp / SW + 1, OW);
    T acc = 0;
    for (int oh = oh_start; oh < oh_end; ++oh)
        for (int ow = ow_start; ow < ow_end; ++ow) acc += grad[((ptrdiff_t)nc * OH + oh) * OW + ow];
    gx = acc / (T)(KH * KW);
"""


def max_pool2d_forward_gpu(x, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """CuPy twin of :func:`max_pool2d_forward_cpu` (one thread per output element)."""
    cp = backend.cupy_module()
    N, C, H, W = x.shape
    OH, OW = pool_output_size(H, KH, SH, PH), pool_output_size(W, KW, SW, PW)
    out = cp.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = cp.empty((N, C, OH, OW), dtype=np.int32)
    kernel = backend.elementwise_kernel(
        "minires_max_pool2d_forward", "raw T x, " + _POOL_PARAMS, "T y, int32 argmax", _MAX_POOL_FORWARD)
    kernel(cp.ascontiguousarray(x), H, W, OH, OW, KH, KW, SH, SW, PH, PW, out, argmax)
    return out, argmax


def max_pool2d_backward_gpu(grad, argmax, x_shape, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """CuPy twin of :func:`max_pool2d_backward_cpu` (one thread per input pixel, a gather)."""
    cp = backend.cupy_module()
    N, C, H, W = x_shape
    OH, OW = grad.shape[2], grad.shape[3]
    grad_x = cp.empty((N, C, H, W), dtype=grad.dtype)
    kernel = backend.elementwise_kernel(
        "minires_max_pool2d_backward", "raw T grad, raw int32 argmax, " + _POOL_PARAMS, "T gx",
        _MAX_POOL_BACKWARD)
    kernel(cp.ascontiguousarray(grad), cp.ascontiguousarray(argmax), H, W, OH, OW, KH, KW, SH, SW, PH, PW,
           grad_x)
    return grad_x


def avg_pool2d_forward_gpu(x, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """CuPy twin of :func:`avg_pool2d_forward_cpu` (one thread per output element)."""
    cp = backend.cupy_module()
    N, C, H, W = x.shape
    OH, OW = pool_output_size(H, KH, SH, PH), pool_output_size(W, KW, SW, PW)
    out = cp.empty((N, C, OH, OW), dtype=x.dtype)
    kernel = backend.elementwise_kernel(
        "minires_avg_pool2d_forward", "raw T x, " + _POOL_PARAMS, "T y", _AVG_POOL_FORWARD)
    kernel(cp.ascontiguousarray(x), H, W, OH, OW, KH, KW, SH, SW, PH, PW, out)
    return out


def avg_pool2d_backward_gpu(grad, x_shape, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """CuPy twin of :func:`avg_pool2d_backward_cpu` (one thread per input pixel, a gather)."""
    cp = backend.cupy_module()
    N, C, H, W = x_shape
    OH, OW = grad.shape[2], grad.shape[3]
    grad_x = cp.empty((N, C, H, W), dtype=grad.dtype)
    kernel = backend.elementwise_kernel(
        "minires_avg_pool2d_backward", "raw T grad, " + _POOL_PARAMS, "T gx", _AVG_POOL_BACKWARD)
    kernel(cp.ascontiguousarray(grad), H, W, OH, OW, KH, KW, SH, SW, PH, PW, grad_x)
    return grad_x


# --- adaptive average pooling (generic NumPy/CuPy code) ----------------------------------

def adaptive_bins(in_size: int, out_size: int):
    """PyTorch's adaptive bins: ``(starts, ends)`` with ``start = floor(i L/O)``, ``end = ceil((i+1) L/O)``."""
    index = np.arange(out_size)
    starts = (index * in_size) // out_size
    ends = ((index + 1) * in_size + out_size - 1) // out_size
    return starts, ends


def adaptive_avg_pool2d_forward(x, OH: int, OW: int):  # noqa: N803
    """Adaptive average pooling of an NCHW array to ``(OH, OW)`` (NumPy or CuPy).

    Divisible sizes are one reshape-mean; otherwise the separable average runs as one
    slice-mean per output column and then per output row (``OW + OH`` whole-slice steps),
    which keeps a NaN inside the bins that contain it.
    """
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    if H % OH == 0 and W % OW == 0:
        return x.reshape(N, C, OH, H // OH, OW, W // OW).mean(axis=(3, 5))
    columns = xp.empty((N, C, H, OW), dtype=x.dtype)
    for j, (start, end) in enumerate(zip(*adaptive_bins(W, OW))):
        columns[:, :, :, j] = x[:, :, :, start:end].mean(axis=3)
    out = xp.empty((N, C, OH, OW), dtype=x.dtype)
    for i, (start, end) in enumerate(zip(*adaptive_bins(H, OH))):
        out[:, :, i, :] = columns[:, :, start:end, :].mean(axis=2)
    return out


def adaptive_avg_pool2d_backward(grad, x_shape):
    """Gradient of :func:`adaptive_avg_pool2d_forward` (NumPy or CuPy): each bin spreads ``g / |bin|``."""
    xp = backend.get_array_module(grad)
    N, C, H, W = x_shape
    OH, OW = grad.shape[2], grad.shape[3]
    if H % OH == 0 and W % OW == 0:
        KH, KW = H // OH, W // OW
        share = (grad / grad.dtype.type(KH * KW)).reshape(N, C, OH, 1, OW, 1)
        return xp.broadcast_to(share, (N, C, OH, KH, OW, KW)).reshape(N, C, H, W)
    columns = xp.zeros((N, C, H, OW), dtype=grad.dtype)
    for i, (start, end) in enumerate(zip(*adaptive_bins(H, OH))):
        columns[:, :, start:end, :] += grad[:, :, i:i + 1, :] / grad.dtype.type(end - start)
    grad_x = xp.zeros((N, C, H, W), dtype=grad.dtype)
    for j, (start, end) in enumerate(zip(*adaptive_bins(W, OW))):
        grad_x[:, :, :, start:end] += columns[:, :, :, j:j + 1] / grad.dtype.type(end - start)
    return grad_x


# --- the families and their entry points -----------------------------------------------------

MAX_POOL2D = KernelFamily("max_pool2d", KernelImplementation(
    "reference", twin(max_pool2d_forward_cpu, max_pool2d_forward_gpu), twin(max_pool2d_backward_cpu,
                                                                            max_pool2d_backward_gpu)))
AVG_POOL2D = KernelFamily("avg_pool2d", KernelImplementation(
    "reference", twin(avg_pool2d_forward_cpu, avg_pool2d_forward_gpu), twin(avg_pool2d_backward_cpu,
                                                                            avg_pool2d_backward_gpu)))


def max_pool2d_forward(x, KH, KW, SH, SW, PH, PW, *, algorithm: str | None = None):  # noqa: N803
    """Max pooling of an NCHW array (no autograd; arguments validated by the caller).

    Returns:
        ``(out, argmax)``: ``out`` is ``(N, C, OH, OW)``; ``argmax`` holds, per output,
        the window offset ``i * KW + j`` of the chosen pixel (an integer array).
    """
    return MAX_POOL2D.select(x, algorithm=algorithm).forward(x, KH, KW, SH, SW, PH, PW)


def max_pool2d_backward(grad, argmax, x_shape, KH, KW, SH, SW, PH, PW, *,  # noqa: N803
                        algorithm: str | None = None):
    """Gradient of :func:`max_pool2d_forward` with respect to its input, shaped ``x_shape``."""
    return MAX_POOL2D.select(grad, algorithm=algorithm).backward(grad, argmax, x_shape, KH, KW, SH, SW, PH, PW)


def avg_pool2d_forward(x, KH, KW, SH, SW, PH, PW, *, algorithm: str | None = None):  # noqa: N803
    """Average pooling of an NCHW array (no autograd; ``count_include_pad=True``)."""
    return AVG_POOL2D.select(x, algorithm=algorithm).forward(x, KH, KW, SH, SW, PH, PW)


def avg_pool2d_backward(grad, x_shape, KH, KW, SH, SW, PH, PW, *, algorithm: str | None = None):  # noqa: N803
    """Gradient of :func:`avg_pool2d_forward` with respect to its input, shaped ``x_shape``."""
    return AVG_POOL2D.select(grad, algorithm=algorithm).backward(grad, x_shape, KH, KW, SH, SW, PH, PW)


__all__ = [
    "MAX_POOL2D", "AVG_POOL2D", "pool_output_size", "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
    "avg_pool2d_backward", "adaptive_bins", "adaptive_avg_pool2d_forward",
    "adaptive_avg_pool2d_backward", "max_pool2d_forward_cpu", "max_pool2d_backward_cpu",
    "avg_pool2d_forward_cpu", "avg_pool2d_backward_cpu", "max_pool2d_forward_gpu",
    "max_pool2d_backward_gpu", "avg_pool2d_forward_gpu", "avg_pool2d_backward_gpu",
]
