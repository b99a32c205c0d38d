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

import numpy as np

from .. import backend
from .activation import keep_where_cpu


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


def _grad_scale(inv_std, weight):
    """Per-channel ``weight * inv_std`` (``inv_std`` when there is no weight)."""
    return inv_std if weight is None else weight * inv_std


# --- CPU ---------------------------------------------------------------------------------

def batch_norm_forward_cpu(x, weight, bias, running_mean, running_var, training: bool,
                           momentum: float, eps: float, relu: bool = False, addend=None):
    """Batch norm (optionally ``+ addend``, then optionally ReLU) on NumPy; see the module docstring.

    Returns:
        ``(out, x_hat, inv_std)``: the output, the normalised input (saved for backward)
        and the per-channel ``1 / sqrt(var + eps)``.
    """
    axes = channel_axes(x.ndim)
    cshape = channel_shape(x.shape)
    if training:
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
        update_running_stats(running_mean, running_var, mean, var, count, momentum)
    else:
        mean, var = running_mean, running_var
        x_hat = x - mean.reshape(cshape)
    inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
    x_hat *= inv_std.reshape(cshape)
    out = x_hat * weight.reshape(cshape) if weight is not None else x_hat.copy()
    if bias is not None:
        out += bias.reshape(cshape)
    if addend is not None:
        out += addend
    if relu:
        np.maximum(out, out.dtype.type(0), out=out)
    return out, x_hat, inv_std


def batch_norm_backward_cpu(grad, x_hat, inv_std, weight, training: bool, out=None,
                            needs_weight_grad: bool = True, needs_bias_grad: bool = True,
                            return_masked_grad: bool = False):
    """Gradients of batch norm (and of the fused ReLU when ``out`` is given) on NumPy.

    Returns:
        ``(grad_x, grad_weight, grad_bias)``; the last two are ``None`` when not asked for;
        with ``return_masked_grad`` also the ReLU-masked upstream gradient (the gradient
        of the ``addend`` of ``relu(bn(x) + addend)``).
    """
    axes = channel_axes(grad.ndim)
    cshape = channel_shape(grad.shape)
    if out is not None:
        grad = keep_where_cpu(~(out <= 0), grad)  # ReLU mask, PyTorch's rule
    sum_g = grad.sum(axis=axes) if (training or needs_bias_grad) else None
    sum_gx = (grad * x_hat).sum(axis=axes) if (training or needs_weight_grad) else None
    scale = _grad_scale(inv_std, weight)
    if training:
        count = grad.size // grad.shape[1]
        grad_x = x_hat * (-sum_gx / count).reshape(cshape)
        grad_x += grad
        grad_x -= (sum_g / count).reshape(cshape)
        grad_x *= scale.reshape(cshape)
    else:
        grad_x = grad * scale.reshape(cshape)
    result = (grad_x, sum_gx if needs_weight_grad else None, sum_g if needs_bias_grad else None)
    return result + (grad,) if return_masked_grad else result


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


def _batch_stats_gpu(sum_sq, mean, residual, running_mean, running_var, count: int, momentum: float, eps: float):
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


def batch_norm_forward_gpu(x, weight, bias, running_mean, running_var, training: bool,
                           momentum: float, eps: float, relu: bool = False, addend=None):
    """CuPy twin of :func:`batch_norm_forward_cpu` (three passes over ``x`` in training).

    With ``addend`` it is composed of the plain batch norm, one addition and the ReLU
    kernel (no dedicated kernel yet).
    """
    if addend is not None:
        from .activation import relu_forward_gpu  # noqa: PLC0415

        out, x_hat, inv_std = batch_norm_forward_gpu(x, weight, bias, running_mean, running_var, training,
                                                     momentum, eps)
        out += addend
        return (relu_forward_gpu(out) if relu else out), x_hat, inv_std
    cp = backend.cupy_module()
    axes = channel_axes(x.ndim)
    cshape = channel_shape(x.shape)
    C = x.shape[1]
    scale = (cp.ones(C, dtype=x.dtype) if weight is None else weight).reshape(cshape)
    shift = (cp.zeros(C, dtype=x.dtype) if bias is None else bias).reshape(cshape)
    if training:
        count = x.size // C
        mean = x.mean(axis=axes)
        x_hat = _center_kernel()(x, mean.reshape(cshape))
        # the mean of the centred data is the rounding error of the first mean (see the CPU twin)
        residual = x_hat.mean(axis=axes)
        sum_sq = _sum_sq_kernel()(x_hat, axis=axes)
        inv_std = _batch_stats_gpu(sum_sq, mean, residual, running_mean, running_var, count, momentum, eps)
        out = cp.empty_like(x_hat)
        _scale_in_place_kernel(relu)(residual.reshape(cshape), inv_std.reshape(cshape), scale, shift, x_hat, out)
        return out, x_hat, inv_std
    inv_std = 1 / cp.sqrt(running_var + x.dtype.type(eps))
    x_hat, out = _normalize_kernel(relu)(x, running_mean.reshape(cshape), inv_std.reshape(cshape), scale, shift)
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


def _backward_kernel(relu: bool):
    if relu:
        return backend.elementwise_kernel(
            "minires_bn_relu_backward", "T g, T y, T x_hat, T scale, T mean_g, T mean_gx", "T gx",
            # the mask hits g only: the batch statistics still couple every x to every output
            "T g_masked = (y <= (T)0) ? (T)0 : g; gx = scale * (g_masked - mean_g - x_hat * mean_gx)")
    return backend.elementwise_kernel(
        "minires_bn_backward", "T g, T x_hat, T scale, T mean_g, T mean_gx", "T gx",
        "gx = scale * (g - mean_g - x_hat * mean_gx)")


def _backward_stats_kernel(relu: bool, affine: bool):
    """Training backward in one pass, the per-channel ``scale`` and means computed in the kernel.

    Same arithmetic as :func:`_backward_kernel` fed with ``weight * inv_std``,
    ``sum_g / count`` and ``sum_gx / count`` (which would be three more launches).
    """
    params = "T g, " + ("T y, " if relu else "") + "T x_hat, T inv_std, " + ("T weight, " if affine else "") + \
        "T sum_g, T sum_gx, T count"
    body = ("const T scale = " + ("weight * inv_std" if affine else "inv_std") + "; "
            "const T mean_g = sum_g / count; const T mean_gx = sum_gx / count; " +
            ("const T g_used = (y <= (T)0) ? (T)0 : g; " if relu else "const T g_used = g; ") +
            "gx = scale * (g_used - mean_g - x_hat * mean_gx)")
    name = "minires_bn" + ("_relu" if relu else "") + "_backward_stats" + ("_affine" if affine else "")
    return backend.elementwise_kernel(name, params, "T gx", body)


def batch_norm_backward_gpu(grad, x_hat, inv_std, weight, training: bool, out=None,
                            needs_weight_grad: bool = True, needs_bias_grad: bool = True,
                            return_masked_grad: bool = False):
    """CuPy twin of :func:`batch_norm_backward_cpu` (two reductions and one pass in training).

    ``return_masked_grad`` materialises the ReLU-masked gradient with the ReLU backward
    kernel and runs the plain batch-norm backward on it.
    """
    if return_masked_grad:
        if out is not None:
            from .activation import relu_backward_gpu  # noqa: PLC0415

            grad = relu_backward_gpu(grad, out)
        return batch_norm_backward_gpu(grad, x_hat, inv_std, weight, training, None,
                                       needs_weight_grad, needs_bias_grad) + (grad,)
    axes = channel_axes(grad.ndim)
    cshape = channel_shape(grad.shape)
    if out is not None:
        sum_g_kernel, sum_gx_kernel = _masked_sum_kernels()
        sum_g = sum_g_kernel(grad, out, axis=axes) if (training or needs_bias_grad) else None
        sum_gx = sum_gx_kernel(grad, out, x_hat, axis=axes) if (training or needs_weight_grad) else None
    else:
        sum_g = grad.sum(axis=axes) if (training or needs_bias_grad) else None
        sum_gx = _sum_prod_kernel()(grad, x_hat, axis=axes) if (training or needs_weight_grad) else None
    if training:
        count = grad.dtype.type(grad.size // grad.shape[1])
        per_channel = [inv_std.reshape(cshape)] + ([] if weight is None else [weight.reshape(cshape)]) + \
            [sum_g.reshape(cshape), sum_gx.reshape(cshape), count]
        kernel = _backward_stats_kernel(out is not None, weight is not None)
        grad_x = kernel(grad, out, x_hat, *per_channel) if out is not None else kernel(grad, x_hat, *per_channel)
        return (grad_x, sum_gx if needs_weight_grad else None, sum_g if needs_bias_grad else None)
    scale = _grad_scale(inv_std, weight)
    if out is not None:
        from .activation import relu_backward_gpu  # noqa: PLC0415

        grad_x = relu_backward_gpu(grad, out) * scale.reshape(cshape)
    else:
        grad_x = grad * scale.reshape(cshape)
    return (grad_x, sum_gx if needs_weight_grad else None, sum_g if needs_bias_grad else None)


# --- dispatchers -------------------------------------------------------------------------

def _forward_impl(x):
    """The GPU twin, the channels-last CPU fast path when it applies, or the CPU reference."""
    if backend.is_cupy_array(x):
        return batch_norm_forward_gpu
    from . import fused  # noqa: PLC0415 - fused imports this module; see minires/kernels/fused.py
    return fused.batch_norm_forward_nhwc if fused.applies(x) else batch_norm_forward_cpu


def _backward_impl(grad, x_hat, out):
    """Backward twin of :func:`_forward_impl` (the fast path needs channels-last ``x_hat``/``out``)."""
    if backend.is_cupy_array(grad):
        return batch_norm_backward_gpu
    from . import fused  # noqa: PLC0415
    return fused.batch_norm_backward_nhwc if fused.applies(x_hat, out) else batch_norm_backward_cpu


def _forward(x, weight, bias, running_mean, running_var, training, momentum, eps, need_x_hat, relu, addend):
    """Dispatch a forward; ``need_x_hat=False`` goes only to the channels-last fast path (the
    only one that can skip ``x_hat``)."""
    impl = _forward_impl(x)
    extra = {} if addend is None else {"addend": addend}
    if not need_x_hat and impl not in (batch_norm_forward_cpu, batch_norm_forward_gpu):
        extra["need_x_hat"] = False
    return impl(x, weight, bias, running_mean, running_var, training, momentum, eps, relu=relu, **extra)


def batch_norm_forward(x, weight, bias, running_mean, running_var, training: bool,
                       momentum: float = 0.1, eps: float = 1e-5, need_x_hat: bool = True):
    """Batch normalisation of an ``(N, C, *spatial)`` array (no autograd).

    Args:
        x: input array ``(N, C)`` or ``(N, C, H, W)`` (any number of spatial axes).
        weight: ``(C,)`` scale ``gamma`` or ``None`` (1).
        bias: ``(C,)`` shift ``beta`` or ``None`` (0).
        running_mean: ``(C,)`` array updated in place when ``training``; used when not.
            May be ``None`` in training (no tracking).
        running_var: ``(C,)`` likewise (the unbiased variance is tracked).
        training: use batch statistics (and update the running ones) or running statistics.
        momentum: weight of the new batch statistic in the running update.
        eps: added to the variance before the square root.
        need_x_hat: False when no backward will run; the channels-last fast path may then
            skip ``x_hat`` in evaluation mode (and return ``None`` for it).

    Returns:
        ``(out, x_hat, inv_std)``: ``out = weight * x_hat + bias`` with
        ``x_hat = (x - mean) * inv_std``, and the ``(C,)`` ``inv_std = 1/sqrt(var + eps)``.
    """
    return _forward(x, weight, bias, running_mean, running_var, training, momentum, eps, need_x_hat,
                    relu=False, addend=None)


def batch_norm_backward(grad, x_hat, inv_std, weight, training: bool,
                        needs_weight_grad: bool = True, needs_bias_grad: bool = True):
    """Gradients of :func:`batch_norm_forward` (no autograd).

    Args:
        grad: upstream gradient, shaped like ``x``.
        x_hat: the normalised input saved by the forward pass.
        inv_std: the ``(C,)`` inverse standard deviation saved by the forward pass.
        weight: ``(C,)`` scale or ``None``.
        training: whether the forward pass used batch statistics (their gradient is included).
        needs_weight_grad: compute ``grad_weight = sum g x_hat``.
        needs_bias_grad: compute ``grad_bias = sum g``.

    Returns:
        ``(grad_x, grad_weight or None, grad_bias or None)``.
    """
    impl = _backward_impl(grad, x_hat, None)
    return impl(grad, x_hat, inv_std, weight, training, None, needs_weight_grad, needs_bias_grad)


def batch_norm_relu(x, weight, bias, running_mean, running_var, training: bool,
                    momentum: float = 0.1, eps: float = 1e-5, need_x_hat: bool = True, addend=None):
    """Fused ``relu(batch_norm(x, ...) [+ addend])`` (no autograd); arguments as :func:`batch_norm_forward`.

    ``addend`` (an array shaped like ``x``, or ``None``) is added to the normalised output
    before the ReLU: a residual block's ``relu(bn2(y) + shortcut)``.

    Returns:
        ``(out, x_hat, inv_std)`` where ``out = max(weight * x_hat + bias [+ addend], 0)``.
        Keep ``out`` for :func:`batch_norm_relu_backward`: it carries the ReLU mask.
    """
    if addend is not None and tuple(addend.shape) != tuple(x.shape):
        raise ValueError(f"batch_norm_relu: addend of shape {tuple(addend.shape)} does not match "
                         f"the input's {tuple(x.shape)}")
    return _forward(x, weight, bias, running_mean, running_var, training, momentum, eps, need_x_hat,
                    relu=True, addend=addend)


batch_norm_relu_forward = batch_norm_relu


def batch_norm_relu_backward(grad, out, x_hat, inv_std, weight, training: bool,
                             needs_weight_grad: bool = True, needs_bias_grad: bool = True,
                             return_masked_grad: bool = False):
    """Gradients of :func:`batch_norm_relu` (no autograd).

    The upstream ``grad`` is masked with the ReLU rule (``0 where out <= 0``) inside the
    reductions and the final pass; otherwise as :func:`batch_norm_backward`.

    Args:
        return_masked_grad: also return the masked gradient, which is the gradient of the
            ``addend`` of :func:`batch_norm_relu`.

    Returns:
        ``(grad_x, grad_weight or None, grad_bias or None)``, plus the masked gradient
        with ``return_masked_grad``.
    """
    impl = _backward_impl(grad, x_hat, out)
    return impl(grad, x_hat, inv_std, weight, training, out, needs_weight_grad, needs_bias_grad,
                return_masked_grad=return_masked_grad)


__all__ = [
    "batch_norm_forward", "batch_norm_backward", "batch_norm_relu", "batch_norm_relu_forward",
    "batch_norm_relu_backward", "update_running_stats", "channel_axes", "channel_shape",
    "batch_norm_forward_cpu", "batch_norm_backward_cpu", "batch_norm_forward_gpu",
    "batch_norm_backward_gpu",
]
