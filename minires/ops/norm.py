"""Batch normalisation: ``batch_norm`` and the fused ``batch_norm_relu`` / ``batch_norm_add_relu``."""

from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..autograd import Function, Tensor, builds_graph, no_grad
from ..autograd.function import check_float_tensor, sum_tangents
from ..kernels import fused
from ..kernels import norm as kernels
from ..kernels.conv import conv_geometry, select_conv_algorithm
from .conv import Conv2d


class BatchNorm(Function):
    """``[relu](batch_norm(x) [+ addend])`` (the ReLU with ``relu=True``, the addend when given)."""

    def forward(self, x, weight, bias, addend=None, *, running_mean, running_var, training, momentum, eps, relu,
                need_x_hat=True):
        self.params = kernels.BatchNormParams(weight, bias, running_mean, running_var, training, momentum, eps, relu)
        saved = kernels.batch_norm_forward(x, self.params, addend, need_x_hat=need_x_hat)
        self.saved = saved if relu else saved._replace(out=None)    # (the output is the ReLU's mask only)
        return saved.out

    def backward(self, grad):
        # d/d bias = sum g; d/d weight = sum g x_hat;
        # d/dx = weight inv_std (g - mean g - x_hat mean(g x_hat)) in training (batch stats depend on x),
        # weight inv_std g in eval; the fused ReLU first zeroes g where out <= 0
        # the addend of relu(bn(x) + addend) gets the ReLU-masked upstream gradient
        needs = kernels.GradsNeeded(*self.needs_input_grad)
        return tuple(kernels.batch_norm_backward(grad, self.saved, self.params, needs))

    def jvp(self, tangents, inputs, output, **options):
        # d(w x_hat + b [+ a]) = w d x_hat + x_hat dw + db [+ da], then the fused ReLU's 1[out > 0];
        # training: the batch statistics move with x, d x_hat = inv_std (dx - mean(dx) - x_hat mean(x_hat dx))
        (tx, tw, tb), (x, w, _) = tangents[:3], inputs[:3]
        ta = tangents[3] if len(tangents) > 3 else None
        xp = backend.get_array_module(x)
        axes, bshape = (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)
        if options["training"]:
            mean = x.mean(axis=axes, keepdims=True)
            inv_std = 1.0 / xp.sqrt(x.var(axis=axes, keepdims=True) + options["eps"])
        else:
            mean = options["running_mean"].reshape(bshape)
            inv_std = 1.0 / xp.sqrt(options["running_var"].reshape(bshape) + options["eps"])
        x_hat = (x - mean) * inv_std
        d_hat = None
        if tx is not None and options["training"]:
            d_hat = inv_std * (tx - tx.mean(axis=axes, keepdims=True)
                               - x_hat * (x_hat * tx).mean(axis=axes, keepdims=True))
        elif tx is not None:
            d_hat = inv_std * tx  # fixed running statistics: an affine map
        if d_hat is not None and w is not None:
            d_hat = w.reshape(bshape) * d_hat
        tangent = sum_tangents(output.shape, d_hat, None if tw is None else tw.reshape(bshape) * x_hat,
                               None if tb is None else tb.reshape(bshape), ta)
        return tangent * (output > 0) if options["relu"] else tangent


def _channel_vector(name: str, value, x: Tensor, arrays_allowed: bool):
    """The array behind a ``(C,)`` parameter (a Tensor) or running statistic (also an array), or None."""
    if value is None:
        return None
    if not (isinstance(value, Tensor) or arrays_allowed and (isinstance(value, np.ndarray)
                                                           or backend.is_cupy_array(value))):
        kinds = "a Tensor, an array or None" if arrays_allowed else "a Tensor or None"
        raise TypeError(f"batch_norm: {name} must be {kinds}, got {type(value).__name__}")
    array = value.data if isinstance(value, Tensor) else value
    if tuple(array.shape) != (x.shape[1],):
        raise ValueError(f"batch_norm: {name} must have shape ({x.shape[1]},) for input of shape {x.shape}, "
                         f"got {tuple(array.shape)}")
    if arrays_allowed and array.dtype != x.dtype:
        raise TypeError(f"batch_norm: {name} has dtype {array.dtype}, expected the input's {x.dtype}")
    if arrays_allowed and backend.array_device(array) != x.device:
        raise ValueError(f"batch_norm: {name} is on {backend.array_device(array)}, the input on {x.device}")
    return array


def _batch_norm(name, x, running_mean, running_var, weight, bias, training, momentum, eps, relu, addend=None):
    check_float_tensor(name, x)
    if x.ndim < 2:
        raise ValueError(f"{name}: expected input of shape (N, C) or (N, C, *spatial), got shape {x.shape}")
    if x.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one channel (axis 1), got input of shape {x.shape}")
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{name}: training must be a bool, got {type(training).__name__}")
    for label, value in (("momentum", momentum), ("eps", eps)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{name}: {label} must be a real number, got {value!r}")
    if eps < 0:
        raise ValueError(f"{name}: eps must be >= 0, got {eps}")
    _channel_vector("weight", weight, x, arrays_allowed=False)
    _channel_vector("bias", bias, x, arrays_allowed=False)
    if addend is not None:
        if not isinstance(addend, Tensor):
            raise TypeError(f"{name}: addend must be a Tensor, got {type(addend).__name__}")
        if addend.shape != x.shape:
            raise ValueError(f"{name}: addend must have the input's shape {x.shape}, got {addend.shape}")
    mean_array = _channel_vector("running_mean", running_mean, x, arrays_allowed=True)
    var_array = _channel_vector("running_var", running_var, x, arrays_allowed=True)
    if not training and (mean_array is None or var_array is None):
        raise ValueError(f"{name}: running_mean and running_var must be given when training=False")
    if training and x.data.size // x.shape[1] <= 1:
        raise ValueError(f"{name}: expected more than 1 value per channel when training, got input of shape {x.shape}")
    # without a graph (no_grad, or nothing requires grad) no backward runs: the kernels may skip x_hat
    return BatchNorm.apply(x, weight, bias, addend, running_mean=mean_array, running_var=var_array,
                           training=bool(training), momentum=float(momentum), eps=float(eps), relu=relu,
                           need_x_hat=builds_graph((x, weight, bias, addend)))


def batch_norm(x: Tensor, running_mean, running_var, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch normalisation over the channel axis 1 (PyTorch's ``F.batch_norm``).

    ``y = weight * (x - mean) / sqrt(var + eps) + bias`` per channel, where in training
    ``mean, var`` are the batch mean and biased variance over ``(N, *spatial)`` and the
    running statistics are updated in place:
    ``running_mean = (1 - momentum) running_mean + momentum mean`` and
    ``running_var = (1 - momentum) running_var + momentum var * M / (M - 1)`` (unbiased,
    ``M = N * H * W``). In eval mode ``mean, var`` are the running statistics.

    Args:
        x: input ``(N, C)`` or ``(N, C, H, W)`` (any number of spatial axes).
        running_mean: ``(C,)`` Tensor or array, updated in place in training; ``None``
            means no tracking (allowed only when ``training``).
        running_var: ``(C,)`` Tensor or array, likewise.
        weight: ``(C,)`` scale, or ``None`` for 1.
        bias: ``(C,)`` shift, or ``None`` for 0.
        training: use batch statistics (and update the running ones) instead of the running ones.
        momentum: weight of the new batch statistic in the running update.
        eps: added to the variance for stability.

    Returns:
        A tensor shaped like ``x``; differentiable in ``x``, ``weight`` and ``bias``.

    Raises:
        TypeError: non-Tensor or non-floating input, or a dtype that differs from ``x``'s.
        ValueError: input of rank < 2, parameter/statistic shapes that are not ``(C,)``,
            statistics on another device, missing running statistics in eval mode, or
            a single value per channel in training.
    """
    return _batch_norm("batch_norm", x, running_mean, running_var, weight, bias, training,
                       momentum, eps, relu=False)


def batch_norm_relu(x: Tensor, running_mean, running_var, weight: Tensor | None = None,
                    bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
                    eps: float = 1e-5) -> Tensor:
    """Fused ``relu(batch_norm(x, ...))`` (a minires addition; not in PyTorch).

    Same arguments, running-statistics update and errors as :func:`batch_norm`; the
    result equals ``relu(batch_norm(...))`` value for value and gradient for gradient,
    but the forward and backward passes each make fewer passes over memory and the
    pre-activation is never stored.

    Returns:
        A tensor shaped like ``x``: ``max(weight * x_hat + bias, 0)``.
    """
    return _batch_norm("batch_norm_relu", x, running_mean, running_var, weight, bias, training,
                       momentum, eps, relu=True)


def batch_norm_add_relu(x: Tensor, addend: Tensor, running_mean, running_var, weight: Tensor | None = None,
                        bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
                        eps: float = 1e-5) -> Tensor:
    """Fused ``relu(batch_norm(x, ...) + addend)`` (a minires addition; not in PyTorch).

    The tail of a post-activation residual block, ``relu(bn2(conv2(...)) + shortcut)``, as
    one op. Same arguments, running-statistics update and errors as :func:`batch_norm`,
    plus ``addend`` (a tensor shaped like ``x``, on its device and of its dtype). Values
    and gradients equal those of the unfused expression: ``addend`` receives the
    ReLU-masked upstream gradient, ``x``, ``weight`` and ``bias`` the batch-norm gradients
    of that masked gradient; the sum before the ReLU is never stored.

    Returns:
        A tensor shaped like ``x``: ``max(weight * x_hat + bias + addend, 0)``.

    Raises:
        TypeError: as :func:`batch_norm`, or ``addend`` not a Tensor (or of another dtype).
        ValueError: as :func:`batch_norm`, or ``addend`` of another shape or device.
    """
    if addend is None:  # (None means "no addend" inside _batch_norm: it would silently drop the sum)
        raise TypeError("batch_norm_add_relu: addend must be a Tensor, got NoneType")
    return _batch_norm("batch_norm_add_relu", x, running_mean, running_var, weight, bias, training,
                       momentum, eps, relu=True, addend=addend)


class ConvBatchNormEval(Function):
    """Inference-only ``[relu](batch_norm_eval(conv2d(x)) [+ addend])`` as one kernel (no backward)."""

    def forward(self, x, conv_weight, conv_bias, bn_weight, bn_bias, addend=None, *, geometry, running_mean,
                running_var, eps, relu):
        params = kernels.BatchNormParams(bn_weight, bn_bias, running_mean, running_var, False, 0.0, eps, relu)
        return fused.conv_bn_eval_nhwc(x, conv_weight, conv_bias, geometry, params, addend)

    def backward(self, grad):  # pragma: no cover - applied under no_grad only
        raise RuntimeError("conv_batch_norm_eval is inference-only: it has no backward")

    def jvp(self, tangents, inputs, output, *, geometry, running_mean, running_var, eps, relu):
        # the chain of the two ops it fuses: the convolution's JVP, then evaluation-mode batch norm's
        conv_options = {"stride": (geometry.SH, geometry.SW), "padding": (geometry.PH, geometry.PW), "groups": 1}
        x, conv_weight, conv_bias = inputs[:3]
        conv_out = Conv2d().forward(x, conv_weight, conv_bias, **conv_options)
        conv_tangent = None
        if any(t is not None for t in tangents[:3]):
            conv_tangent = Conv2d().jvp(tangents[:3], inputs[:3], conv_out, **conv_options)
        bn_options = {"running_mean": running_mean, "running_var": running_var, "training": False,
                      "momentum": 0.0, "eps": eps, "relu": relu}
        return BatchNorm().jvp((conv_tangent, *tangents[3:]), (conv_out, *inputs[3:]), output, **bn_options)


def conv_batch_norm_eval(x: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, stride, padding,
                         running_mean, running_var, weight: Tensor | None, bias: Tensor | None, eps: float,
                         addend: Tensor | None = None, relu: bool = True) -> Tensor | None:
    """Inference-only ``relu(batch_norm_eval(conv2d(x, ...)) [+ addend])`` in one pass, or ``None``.

    The evaluation-mode batch norm (running statistics), the addition and the ReLU run
    on each chunk of the convolution's output while it is in cache
    (:func:`minires.kernels.fused.conv_bn_eval_nhwc`). It builds no graph (it runs under
    ``no_grad``), so callers use it only when no gradient is wanted (``minires.nn.fusion``
    checks). Returns ``None`` when the fast path does not apply (not NumPy, grouped or
    non-channels-last-capable convolution, fast paths off); the caller then runs the ops
    one by one.
    """
    tensors = [t for t in (x, conv_weight, conv_bias, weight, bias, addend) if t is not None]
    if not fused.fast_paths_enabled() or x.ndim != 4 or x.dtype.kind != "f" \
            or any(type(t.data) is not np.ndarray or t.dtype != x.dtype for t in tensors):
        return None
    stats = [s.data if isinstance(s, Tensor) else s for s in (running_mean, running_var)]
    geometry = conv_geometry(x.shape, conv_weight.shape, stride, padding, 1,
                             None if conv_bias is None else conv_bias.shape)
    if any(type(s) is not np.ndarray or s.shape != (geometry.C_out,) for s in stats):
        return None
    if select_conv_algorithm(geometry, "cpu").name != "nhwc":
        return None
    if addend is not None and addend.shape != geometry.out_shape:
        raise ValueError(f"conv_batch_norm_eval: addend must have the output's shape {geometry.out_shape}, "
                         f"got {addend.shape}")
    with no_grad():
        return ConvBatchNormEval.apply(x, conv_weight, conv_bias, weight, bias, addend, geometry=geometry,
                                       running_mean=stats[0], running_var=stats[1], eps=eps, relu=relu)


__all__ = ["batch_norm", "batch_norm_relu", "batch_norm_add_relu", "conv_batch_norm_eval", "BatchNorm",
           "ConvBatchNormEval"]
