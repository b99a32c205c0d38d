"""Batch normalisation (and fused batch norm + ReLU), forward and backward.

Layout: ``x`` is ``(N, C)`` or ``(N, C, *spatial)`` (``NCHW`` for images); statistics are
per channel ``C`` over the other axes, ``M = x.size // C`` values each.

Forward (PyTorch semantics)::

    training:  mean, var = batch mean and biased variance over (N, *spatial)
               running_mean <- (1 - momentum) running_mean + momentum mean
               running_var  <- (1 - momentum) running_var  + momentum var * M / (M - 1)
    eval:      mean, var = running_mean, running_var
    inv_std = 1 / sqrt(var + eps);  x_hat = (x - mean) inv_std;  y = weight x_hat + bias

Backward, with ``g`` the upstream gradient (already masked by the ReLU in the fused
version)::

    grad_bias   = sum g                     grad_weight = sum g x_hat
    training:   grad_x = weight inv_std (g - grad_bias / M - x_hat grad_weight / M)
    eval:       grad_x = weight inv_std g

The fused ReLU variant applies ``relu`` to ``y`` in the same pass and masks ``g`` with
PyTorch's rule (``0 where out <= 0``) inside the reductions and the final pass, so neither
the pre-activation nor the masked gradient is materialised on the GPU.

CPU functions use NumPy with in-place updates to keep temporaries few; GPU twins use
named CuPy ``ReductionKernel``/``ElementwiseKernel`` objects: the training forward pass is
a mean, a centring pass, the residual mean and the sum of squares of the centred values
(which corrects the rounding error of the first mean), and one fused scale-shift(-ReLU)
pass that rescales the centred values in place; the training backward pass is two fused reductions
(with the ReLU mask inside) and one fused elementwise pass.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import backend
from .activation import relu_backward_cpu, relu_backward_gpu, relu_forward_gpu
from .dispatch import KernelFamily, KernelImplementation, twin


class BatchNormParams(NamedTuple):
    """Everything a batch norm needs besides its input and the addend of the fused tail.

    ``weight``/``bias`` are ``(C,)`` arrays or ``None`` (1 and 0); ``running_mean``/``running_var``
    ``(C,)`` arrays updated in place in training (``None``: not tracked) and used in
    evaluation; ``training`` uses batch statistics; ``momentum`` weighs the new batch
    statistic; ``eps`` is added to the variance; ``relu`` fuses ``relu(bn(x) [+ addend])``.
    """

    weight: object = None
    bias: object = None
    running_mean: object = None
    running_var: object = None
    training: bool = False
    momentum: float = 0.1
    eps: float = 1e-5
    relu: bool = False


class BatchNormOutput(NamedTuple):
    """A forward's result, passed whole to :func:`batch_norm_backward`: ``out`` (with ``relu`` it
    carries the mask), ``x_hat = (x - mean) * inv_std`` (an array, the channels-last path's
    :class:`~minires.kernels.fused.SavedInput`, or ``None`` when ``need_x_hat=False`` let the
    forward skip it), the ``(C,)`` ``inv_std = 1 / sqrt(var + eps)`` and the ``algorithm`` that ran."""

    out: object
    x_hat: object
    inv_std: object
    algorithm: str


class GradsNeeded(NamedTuple):
    """Which gradients a backward computes (an op's ``needs_input_grad`` for x, weight, bias, addend)."""

    x: bool = True
    weight: bool = True
    bias: bool = True
    addend: bool = False


class BatchNormGrads(NamedTuple):
    """Gradients of a batch norm, ``None`` where not needed; ``addend`` is the ReLU-masked upstream
    gradient (the gradient of the addend of ``relu(bn(x) + addend)``)."""

    x: object
    weight: object
    bias: object
    addend: object = None


def channel_axes(ndim: int) -> tuple:
    """The axes a per-channel statistic reduces over: ``(0, 2, 3, ...)``."""
    return (0,) + tuple(range(2, ndim))


def channel_shape(x_shape) -> tuple:
    """Shape that broadcasts a length-``C`` vector against ``x``: ``(1, C, 1, 1, ...)``."""
    return (1, x_shape[1]) + (1,) * (len(x_shape) - 2)


def update_running_stats(running_mean, running_var, mean, var, count: int, momentum: float) -> None:
    """Update running statistics in place with PyTorch's rule.

    ``running_mean = (1 - momentum) running_mean + momentum mean`` and
    ``running_var = (1 - momentum) running_var + momentum var * count / (count - 1)``
    (the unbiased batch variance). Either array may be ``None`` (then it is skipped).

    Args:
        running_mean: ``(C,)`` array updated in place, or ``None``.
        running_var: ``(C,)`` array updated in place, or ``None``.
        mean: ``(C,)`` batch mean.
        var: ``(C,)`` biased batch variance.
        count: values per channel ``M`` (> 1).
        momentum: weight of the new batch statistic.
    """
    if running_mean is not None:
        running_mean[...] = momentum * mean.astype(running_mean.dtype, copy=False) \
            + (1 - momentum) * running_mean
    if running_var is not None:
        unbiased = var.astype(running_var.dtype, copy=False) * (count / (count - 1))
        running_var[...] = momentum * unbiased + (1 - momentum) * running_var


def grad_scale(inv_std, weight):
    """Per-channel ``weight * inv_std`` (``inv_std`` when there is no weight)."""
    return inv_std if weight is None else weight * inv_std


# --- CPU ---------------------------------------------------------------------------------

def batch_norm_forward_cpu(x, params: BatchNormParams, addend=None, need_x_hat: bool = True):
    """Batch norm (optionally ``+ addend``, then optionally ReLU) on NumPy; see the module docstring.

    ``need_x_hat`` is accepted for the common signature (the reference always keeps ``x_hat``).

    Returns:
        ``(out, x_hat, inv_std)``: the output, the normalised input (saved for backward)
        and the per-channel ``1 / sqrt(var + eps)``.
    """
    axes = channel_axes(x.ndim)
    cshape = channel_shape(x.shape)
    if params.training:
        count = x.size // x.shape[1]
        mean = x.mean(axis=axes)
        x_hat = x - mean.reshape(cshape)
        # second pass on the centred data removes the rounding error of the first mean,
        # which matters in float32 when |mean| >> std (PyTorch accumulates in float64 on CPU)
        residual = x_hat.mean(axis=axes)
        x_hat -= residual.reshape(cshape)
        # an infinite mean stays infinite (inf - inf made the residual NaN), as in PyTorch
        mean = np.where(np.isfinite(mean), mean + residual, mean)
        var = np.square(x_hat).mean(axis=axes)
        update_running_stats(params.running_mean, params.running_var, mean, var, count, params.momentum)
    else:
        mean, var = params.running_mean, params.running_var
        x_hat = x - mean.reshape(cshape)
    inv_std = 1 / np.sqrt(var + x.dtype.type(params.eps))
    x_hat *= inv_std.reshape(cshape)
    out = x_hat * params.weight.reshape(cshape) if params.weight is not None else x_hat.copy()
    if params.bias is not None:
        out += params.bias.reshape(cshape)
    if addend is not None:
        out += addend
    if params.relu:
        np.maximum(out, out.dtype.type(0), out=out)
    return out, x_hat, inv_std


def batch_norm_backward_cpu(grad, saved, params: BatchNormParams, needs: GradsNeeded = GradsNeeded()):
    """Gradients of :func:`batch_norm_forward_cpu` (of the fused ReLU too with ``params.relu``) on NumPy.

    Args:
        grad: upstream gradient, shaped like ``x``.
        saved: the forward's ``(out, x_hat, inv_std)``.
        params: the forward's parameters.
        needs: which gradients to compute.

    Returns:
        :class:`BatchNormGrads`.
    """
    out, x_hat, inv_std = saved[:3]
    axes = channel_axes(grad.ndim)
    cshape = channel_shape(grad.shape)
    if params.relu:
        grad = relu_backward_cpu(grad, out)  # ReLU mask, PyTorch's rule
    sum_g = grad.sum(axis=axes) if (params.training or needs.bias) else None
    sum_gx = (grad * x_hat).sum(axis=axes) if (params.training or needs.weight) else None
    scale = grad_scale(inv_std, params.weight)
    grad_x = None
    if needs.x and params.training:
        count = grad.size // grad.shape[1]
        grad_x = x_hat * (-sum_gx / count).reshape(cshape)
        grad_x += grad
        grad_x -= (sum_g / count).reshape(cshape)
        grad_x *= scale.reshape(cshape)
    elif needs.x:
        grad_x = grad * scale.reshape(cshape)
    return BatchNormGrads(grad_x, sum_gx if needs.weight else None, sum_g if needs.bias else None,
                          grad if needs.addend else None)


# --- GPU (CuPy) --------------------------------------------------------------------------

def _center_kernel():
    return backend.elementwise_kernel("minires_bn_center", "T x, T mean", "T xc", "xc = x - mean")


def _sum_sq_kernel():
    # no broadcast operand: CuPy reductions with a broadcast input lose their fast paths (benchmarks/RESULTS.md)
    return backend.reduction_kernel("minires_bn_sum_sq", "T x", "T out", "x * x", "a + b", "out = a", "0")


def _scale_in_place_kernel(relu: bool):
    # x_hat holds x - mean on entry and is corrected by the residual mean and rescaled in
    # place (outputs are references in CuPy kernels)
    activation = "y = (v > (T)0 || isnan(v)) ? v : (T)0" if relu else "y = v"
    return backend.elementwise_kernel(
        "minires_bn_relu_scale" if relu else "minires_bn_scale", "T residual, T inv_std, T scale, T shift",
        "T x_hat, T y", "x_hat = (x_hat - residual) * inv_std; T v = x_hat * scale + shift; " + activation)


def _normalize_kernel(relu: bool):
    if relu:
        return backend.elementwise_kernel(
            "minires_bn_relu_forward", "T x, T mean, T inv_std, T scale, T shift", "T x_hat, T y",
            "x_hat = (x - mean) * inv_std; T v = x_hat * scale + shift; "
            "y = (v > (T)0 || isnan(v)) ? v : (T)0")
    return backend.elementwise_kernel(
        "minires_bn_forward", "T x, T mean, T inv_std, T scale, T shift", "T x_hat, T y",
        "x_hat = (x - mean) * inv_std; y = x_hat * scale + shift")


def _batch_stats_gpu(sum_sq, mean, residual, params: BatchNormParams, count: int):
    """Per-channel ``inv_std`` and the running-statistics update in one launch (GPU training forward).

    Computes ``var = sum_sq / count - residual**2``, ``inv_std = 1 / sqrt(var + eps)`` and
    :func:`update_running_stats` with the batch mean ``mean + residual``: the arithmetic of
    the separate CuPy array operations (about fifteen tiny launches per batch norm), in one
    ``ElementwiseKernel`` over the ``C`` channels. Untracked statistics take a smaller
    kernel; only one tracked statistic, or statistics of another dtype, take the separate
    operations.
    """
    cp = backend.cupy_module()
    t = sum_sq.dtype.type
    running_mean, running_var, momentum, eps = params.running_mean, params.running_var, params.momentum, params.eps
    if running_mean is None and running_var is None:
        return backend.elementwise_kernel(
            "minires_bn_inv_std", "T sum_sq, T residual, T count, T eps", "T inv_std",
            "inv_std = (T)1 / sqrt(sum_sq / count - residual * residual + eps)")(sum_sq, residual, t(count), t(eps))
    stats = (running_mean, running_var)
    if all(s is not None and s.dtype == sum_sq.dtype and s.flags.c_contiguous for s in stats):
        inv_std = cp.empty_like(sum_sq)
        backend.elementwise_kernel(
            "minires_bn_stats_update",
            "T sum_sq, T mean, T residual, T count, T eps, T momentum, T keep, T unbias",
            "T inv_std, T running_mean, T running_var",
            "const T var = sum_sq / count - residual * residual; "
            "const T batch_mean = isfinite(mean) ? mean + residual : mean; "
            "inv_std = (T)1 / sqrt(var + eps); "
            "running_mean = momentum * batch_mean + keep * running_mean; "
            "running_var = momentum * (var * unbias) + keep * running_var")(
            sum_sq, mean, residual, t(count), t(eps), t(momentum), t(1 - momentum), t(count / (count - 1)),
            inv_std, running_mean, running_var)
        return inv_std
    var = sum_sq / count - residual * residual
    update_running_stats(running_mean, running_var, cp.where(cp.isfinite(mean), mean + residual, mean), var,
                         count, momentum)
    return 1 / cp.sqrt(var + t(eps))


def batch_norm_forward_gpu(x, params: BatchNormParams, addend=None, need_x_hat: bool = True):
    """CuPy twin of :func:`batch_norm_forward_cpu` (three passes over ``x`` in training).

    With ``addend`` it is composed of the plain batch norm, one addition and the ReLU
    kernel (no dedicated kernel yet).
    """
    if addend is not None:
        out, x_hat, inv_std = batch_norm_forward_gpu(x, params._replace(relu=False))
        out += addend
        return (relu_forward_gpu(out) if params.relu else out), x_hat, inv_std
    cp = backend.cupy_module()
    axes = channel_axes(x.ndim)
    cshape = channel_shape(x.shape)
    C = x.shape[1]
    scale = (cp.ones(C, dtype=x.dtype) if params.weight is None else params.weight).reshape(cshape)
    shift = (cp.zeros(C, dtype=x.dtype) if params.bias is None else params.bias).reshape(cshape)
    if params.training:
        mean = x.mean(axis=axes)
        x_hat = _center_kernel()(x, mean.reshape(cshape))
        # the mean of the centred data is the rounding error of the first mean (see the CPU twin)
        residual = x_hat.mean(axis=axes)
        sum_sq = _sum_sq_kernel()(x_hat, axis=axes)
        inv_std = _batch_stats_gpu(sum_sq, mean, residual, params, x.size // C)
        out = cp.empty_like(x_hat)
        _scale_in_place_kernel(params.relu)(residual.reshape(cshape), inv_std.reshape(cshape), scale, shift,
                                            x_hat, out)
        return out, x_hat, inv_std
    inv_std = 1 / cp.sqrt(params.running_var + x.dtype.type(params.eps))
    x_hat, out = _normalize_kernel(params.relu)(x, params.running_mean.reshape(cshape), inv_std.reshape(cshape),
                                                scale, shift)
    return out, x_hat, inv_std


def _masked_sum_kernels():
    sum_g = backend.reduction_kernel(
        "minires_bn_relu_sum_grad", "T g, T y", "T out", "(y <= (T)0) ? (T)0 : g", "a + b", "out = a", "0")
    sum_gx = backend.reduction_kernel(
        "minires_bn_relu_sum_grad_xhat", "T g, T y, T x_hat", "T out",
        "(y <= (T)0) ? (T)0 : g * x_hat", "a + b", "out = a", "0")
    return sum_g, sum_gx


def _sum_prod_kernel():
    return backend.reduction_kernel(
        "minires_bn_sum_grad_xhat", "T g, T x_hat", "T out", "g * x_hat", "a + b", "out = a", "0")


def _backward_stats_kernel(relu: bool, affine: bool):
    """Training backward in one pass: ``gx = scale (g - mean_g - x_hat mean_gx)`` with ``g`` masked where
    ``y <= 0`` (the fused ReLU), and the per-channel ``scale = weight * inv_std``, ``mean_g = sum_g / count``
    and ``mean_gx = sum_gx / count`` computed in the kernel (not as three more launches)."""
    params = "T g, " + ("T y, " if relu else "") + "T x_hat, T inv_std, " + ("T weight, " if affine else "") + \
        "T sum_g, T sum_gx, T count"
    body = ("const T scale = " + ("weight * inv_std" if affine else "inv_std") + "; "
            "const T mean_g = sum_g / count; const T mean_gx = sum_gx / count; " +
            ("const T g_used = (y <= (T)0) ? (T)0 : g; " if relu else "const T g_used = g; ") +
            "gx = scale * (g_used - mean_g - x_hat * mean_gx)")
    name = "minires_bn" + ("_relu" if relu else "") + "_backward_stats" + ("_affine" if affine else "")
    return backend.elementwise_kernel(name, params, "T gx", body)


def batch_norm_backward_gpu(grad, saved, params: BatchNormParams, needs: GradsNeeded = GradsNeeded()):
    """CuPy twin of :func:`batch_norm_backward_cpu` (two reductions and one pass in training).

    The gradient of an addend materialises the ReLU-masked gradient with the ReLU backward
    kernel and runs the plain batch-norm backward on it.
    """
    out, x_hat, inv_std = saved[:3]
    if needs.addend:
        masked = relu_backward_gpu(grad, out) if params.relu else grad
        grads = batch_norm_backward_gpu(masked, saved, params._replace(relu=False), needs._replace(addend=False))
        return grads._replace(addend=masked)
    axes = channel_axes(grad.ndim)
    mask = out if params.relu else None
    sum_g, sum_gx = _backward_sums_gpu(grad, mask, x_hat, axes, params.training or needs.bias,
                                       params.training or needs.weight)
    grad_x = None
    if needs.x and params.training:
        cshape = channel_shape(grad.shape)
        count = grad.dtype.type(grad.size // grad.shape[1])
        per_channel = [inv_std.reshape(cshape)] + ([] if params.weight is None else [params.weight.reshape(cshape)]) \
            + [sum_g.reshape(cshape), sum_gx.reshape(cshape), count]
        kernel = _backward_stats_kernel(params.relu, params.weight is not None)
        grad_x = kernel(grad, out, x_hat, *per_channel) if params.relu else kernel(grad, x_hat, *per_channel)
    elif needs.x:
        scale = grad_scale(inv_std, params.weight).reshape(channel_shape(grad.shape))
        grad_x = (relu_backward_gpu(grad, out) if params.relu else grad) * scale
    return BatchNormGrads(grad_x, sum_gx if needs.weight else None, sum_g if needs.bias else None)


def _backward_sums_gpu(grad, mask, x_hat, axes, want_sum_g: bool, want_sum_gx: bool):
    """``(sum g, sum g x_hat)`` per channel (``None`` where not wanted), ``g`` masked where ``mask <= 0``."""
    if mask is not None:
        sum_g_kernel, sum_gx_kernel = _masked_sum_kernels()
        return (sum_g_kernel(grad, mask, axis=axes) if want_sum_g else None,
                sum_gx_kernel(grad, mask, x_hat, axis=axes) if want_sum_gx else None)
    return (grad.sum(axis=axes) if want_sum_g else None,
            _sum_prod_kernel()(grad, x_hat, axis=axes) if want_sum_gx else None)


# --- the family and its entry points ------------------------------------------------------

#: batch norm's implementations: the reference (NumPy, or its CuPy twin) and the channels-last
#: CPU fast path ('nhwc', registered by minires.kernels.fused); the problem is the input ``x``
BATCH_NORM = KernelFamily("batch_norm", KernelImplementation(
    "reference", twin(batch_norm_forward_cpu, batch_norm_forward_gpu), twin(batch_norm_backward_cpu,
                                                                            batch_norm_backward_gpu)))


def batch_norm_forward(x, params: BatchNormParams, addend=None, *, need_x_hat: bool = True,
                       algorithm: str | None = None) -> BatchNormOutput:
    """Batch normalisation of an ``(N, C, *spatial)`` array (no autograd), with an optional fused tail.

    ``out = [relu](weight * x_hat + bias [+ addend])`` with ``x_hat = (x - mean) * inv_std``
    (see the module docstring for the statistics and the running update).

    Args:
        x: input array ``(N, C)`` or ``(N, C, H, W)`` (any number of spatial axes).
        params: the :class:`BatchNormParams` (``relu=True`` fuses the ReLU).
        addend: an array shaped like ``x`` added before the ReLU (a residual block's
            ``relu(bn2(y) + shortcut)``), or ``None``.
        need_x_hat: False when no backward will run; the channels-last fast path may then
            skip ``x_hat`` in evaluation mode (and return ``None`` for it).
        algorithm: ``'auto'``, ``'reference'`` or ``'nhwc'`` for this call (default: the
            ``fast_paths`` setting of :mod:`minires.config`).

    Returns:
        :class:`BatchNormOutput` ``(out, x_hat, inv_std, algorithm)``.

    Raises:
        ValueError: an addend whose shape differs from the input's.
    """
    if addend is not None and tuple(addend.shape) != tuple(x.shape):
        raise ValueError(f"batch_norm: addend of shape {tuple(addend.shape)} does not match "
                         f"the input's {tuple(x.shape)}")
    implementation = BATCH_NORM.select(x, algorithm=algorithm)
    out, x_hat, inv_std = implementation.forward(x, params, addend, need_x_hat)
    return BatchNormOutput(out, x_hat, inv_std, implementation.name)


def batch_norm_backward(grad, saved: BatchNormOutput, params: BatchNormParams,
                        needs: GradsNeeded = GradsNeeded()) -> BatchNormGrads:
    """Gradients of :func:`batch_norm_forward` (no autograd), by the implementation that ran it.

    ``grad_bias = sum g``, ``grad_weight = sum g x_hat``, ``grad_x = weight inv_std (g - mean g
    - x_hat mean(g x_hat))`` in training (``weight inv_std g`` in evaluation), with ``g`` the
    upstream gradient masked by the fused ReLU (``0 where out <= 0``, PyTorch's rule).

    Args:
        grad: upstream gradient, shaped like ``x``.
        saved: the forward's :class:`BatchNormOutput`.
        params: the forward's :class:`BatchNormParams`.
        needs: which gradients to compute (default: x, weight and bias).

    Returns:
        :class:`BatchNormGrads` ``(x, weight, bias, addend)``, ``None`` where not needed.
    """
    return BATCH_NORM.get(saved.algorithm).backward(grad, saved, params, needs)


__all__ = [
    "BatchNormParams", "BatchNormOutput", "BatchNormGrads", "GradsNeeded", "BATCH_NORM", "batch_norm_forward",
    "batch_norm_backward", "update_running_stats", "channel_axes", "channel_shape", "grad_scale",
    "batch_norm_forward_cpu", "batch_norm_backward_cpu", "batch_norm_forward_gpu", "batch_norm_backward_gpu",
]
