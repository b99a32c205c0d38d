"""Softmax family and classification losses: softmax, log_softmax, nll_loss, cross_entropy.

Losses take integer class-index targets (PyTorch's ``int64`` targets) and follow
``torch.nn.functional``: the class axis is 1 (``(N, C)`` or ``(N, C, d1, ...)`` logits
with ``(N, d1, ...)`` targets; an unbatched ``(C,)`` input takes a 0-d target), rows whose
target is ``ignore_index`` are skipped, and ``'mean'`` divides by the number of rows
that are not ignored.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import backend, config
from ..autograd import Function, Tensor
from ..autograd.function import check_float_tensor
from ..kernels import loss as kernels

_REDUCTIONS = ("mean", "sum", "none")

def set_gpu_target_checks(enabled: bool) -> bool:
    """Turn the per-call range check of CuPy targets on or off (``minires.config`` ``gpu_target_checks``);
    returns the previous setting.

    On NumPy targets the check always runs. On CuPy targets it costs one device-to-host
    read per call, which stalls the host until the GPU has caught up (and is illegal
    inside CUDA-graph capture); loops that validated their labels once, such as the GPU
    trainer and ``benchmarks/gpu_speed.py``, switch it off. With it off, an out-of-range
    CuPy target gives a wrong loss instead of an error.
    """
    previous = config.get("gpu_target_checks")
    config.set(gpu_target_checks=bool(enabled))
    return previous


class LogSoftmax(Function):
    def forward(self, x, *, axis):
        self.out, self.axis = kernels.log_softmax_forward(x, axis), axis
        return self.out

    def backward(self, grad):
        # d log_softmax(x)_i / d x_j = delta_ij - softmax(x)_j
        return kernels.log_softmax_backward(grad, self.out, self.axis)


class Softmax(Function):
    def forward(self, x, *, axis):
        self.out, self.axis = kernels.softmax_forward(x, axis), axis
        return self.out

    def backward(self, grad):
        # d softmax(x)_i / d x_j = softmax_i (delta_ij - softmax_j)
        return kernels.softmax_backward(grad, self.out, self.axis)


def _to_rows(x):
    """``(N, C, d1, ...)`` -> ``(M, C)`` rows (class axis last); ``(C,)`` -> ``(1, C)``."""
    xp = backend.get_array_module(x)
    if x.ndim == 1:
        return x[None, :]
    return xp.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _from_rows(rows, shape):
    """Inverse of :func:`_to_rows` for an array of the original ``shape``."""
    xp = backend.get_array_module(rows)
    if len(shape) == 1:
        return rows[0]
    moved = rows.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],))
    return xp.ascontiguousarray(xp.moveaxis(moved, -1, 1))


def _reduce(losses, valid, reduction, target_shape):
    """Apply the reduction to per-row losses; returns ``(result, count)``."""
    xp = backend.get_array_module(losses)
    if reduction == "none":
        return losses.reshape(target_shape), None
    total = xp.asarray(losses.sum())
    if reduction == "sum":
        return total, None
    count = xp.asarray(valid.sum(), dtype=losses.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):  # every row ignored: nan, as PyTorch
        return total / count, count


def _row_scale(grad, valid, reduction, count, dtype):
    """Per-row upstream gradient: 0 on ignored rows, divided by the count for a mean."""
    xp = backend.get_array_module(grad)
    if reduction == "none":
        scale = grad.reshape(-1)
    elif reduction == "sum":
        scale = xp.broadcast_to(grad.reshape(1), valid.shape)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = xp.broadcast_to((grad / count).reshape(1), valid.shape)
    return xp.where(valid, scale, dtype.type(0))


class NLLLoss(Function):
    def forward(self, log_probs, target, *, ignore_index, reduction):
        rows, target_rows = _to_rows(log_probs), target.reshape(-1)
        self.valid = target_rows != ignore_index
        losses = kernels.nll_rows(rows, target_rows, ignore_index)
        out, self.count = _reduce(losses, self.valid, reduction, target.shape)
        self.target, self.shape, self.rows_shape = target_rows, log_probs.shape, rows.shape
        self.ignore_index, self.reduction, self.dtype = ignore_index, reduction, log_probs.dtype
        return out

    def backward(self, grad):
        # d nll / d log_probs[m, c] = -scale_m where c == target_m, else 0
        scale = _row_scale(grad, self.valid, self.reduction, self.count, self.dtype)
        rows = kernels.nll_rows_backward(scale, self.target, self.rows_shape, self.dtype, self.ignore_index)
        return _from_rows(rows, self.shape), None


class CrossEntropy(Function):
    def forward(self, logits, target, *, label_smoothing, ignore_index, reduction):
        rows, target_rows = _to_rows(logits), target.reshape(-1)
        self.valid = target_rows != ignore_index
        losses, self.log_probs = kernels.cross_entropy_rows(rows, target_rows, label_smoothing, ignore_index)
        out, self.count = _reduce(losses, self.valid, reduction, target.shape)
        self.target, self.shape = target_rows, logits.shape
        self.options = (label_smoothing, ignore_index, reduction)
        return out

    def backward(self, grad):
        # d loss_m / d logits[m, c] = softmax[m, c] - ((1 - eps) [c == t_m] + eps / C), fused in one pass
        label_smoothing, ignore_index, reduction = self.options
        scale = _row_scale(grad, self.valid, reduction, self.count, self.log_probs.dtype)
        rows = kernels.cross_entropy_rows_backward(scale, self.log_probs, self.target, label_smoothing,
                                                   ignore_index)
        return _from_rows(rows, self.shape), None


# --- validation helpers -------------------------------------------------------------------

def _axis(name: str, x: Tensor, axis, dim) -> int:
    if dim is not None:
        if axis != -1 and axis != dim:
            raise ValueError(f"{name}: got both axis={axis} and dim={dim}")
        axis = dim
    if not isinstance(axis, (numbers.Integral, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{name}: axis must be an int, got {axis!r}")
    if x.ndim == 0:
        raise ValueError(f"{name}: expected a tensor of rank >= 1, got a 0-d tensor")
    ndim = x.ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for a tensor of shape {x.shape}")
    return int(axis) % ndim


def _target(name: str, target, logits: Tensor, ignore_index) -> Tensor:
    """Validate integer class targets against ``(N, C, d1, ...)`` / ``(C,)`` logits."""
    if isinstance(target, Tensor):
        t = target
    elif isinstance(target, np.ndarray) or backend.is_cupy_array(target):
        t = Tensor(target)
    else:
        raise TypeError(f"{name}: target must be a Tensor of class indices, got {type(target).__name__}")
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"{name}: target must hold integer class indices (e.g. int64), got dtype {t.dtype}; "
            "class-probability targets are not supported")
    if logits.ndim == 0:
        raise ValueError(f"{name}: expected input of shape (N, C) or (C,), got a 0-d tensor")
    expected = () if logits.ndim == 1 else (logits.shape[0],) + logits.shape[2:]
    if t.shape != expected:
        raise ValueError(f"{name}: target shape {t.shape} does not match input shape {logits.shape}; "
                         f"expected target shape {expected}")
    if not isinstance(ignore_index, (numbers.Integral, np.integer)) or isinstance(ignore_index, bool):
        raise TypeError(f"{name}: ignore_index must be an int, got {ignore_index!r}")
    classes = logits.shape[1] if logits.ndim > 1 else logits.shape[0]
    if classes == 0:
        raise ValueError(f"{name}: input has no classes (shape {logits.shape})")
    if t.data.size and (config.get("gpu_target_checks") or not backend.is_cupy_array(t.data)):
        data = t.data
        bad = ((data < 0) | (data >= classes)) & (data != ignore_index)
        if bool(bad.any()):
            first = int(backend.as_numpy(data[bad].reshape(-1)[:1])[0])
            raise ValueError(f"{name}: target {first} is out of range for {classes} classes "
                             f"(expected 0 <= target < {classes} or ignore_index={ignore_index})")
    return t


def _reduction(name: str, reduction) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


# --- public functions ---------------------------------------------------------------------

def log_softmax(x: Tensor, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """``log(softmax(x))`` along ``axis``, computed stably (log-sum-exp).

    ``log_softmax(x)_i = x_i - max(x) - log(sum_j exp(x_j - max(x)))``.

    Args:
        x: floating tensor of any rank >= 1.
        axis: the axis to normalise (default the last).
        dim: PyTorch's name for ``axis`` (either may be given).

    Returns:
        A tensor shaped like ``x``.

    Raises:
        TypeError: non-Tensor or non-floating input.
        ValueError: ``axis`` out of range.
    """
    check_float_tensor("log_softmax", x)
    return LogSoftmax.apply(x, axis=_axis("log_softmax", x, axis, dim))


def softmax(x: Tensor, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, computed stably.

    Args:
        x: floating tensor of any rank >= 1.
        axis: the axis to normalise (default the last).
        dim: PyTorch's name for ``axis`` (either may be given).

    Returns:
        A tensor shaped like ``x`` whose entries along ``axis`` sum to 1.

    Raises:
        TypeError: non-Tensor or non-floating input.
        ValueError: ``axis`` out of range.
    """
    check_float_tensor("softmax", x)
    return Softmax.apply(x, axis=_axis("softmax", x, axis, dim))


def nll_loss(log_probs: Tensor, target, *, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of integer targets (PyTorch's ``F.nll_loss`` without class weights).

    ``loss_n = -log_probs[n, target_n]``, averaged over the rows whose target is not
    ``ignore_index`` (``reduction='mean'``), summed (``'sum'``) or returned per row (``'none'``).

    Args:
        log_probs: ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)`` floating tensor (usually a log-softmax).
        target: integer Tensor (or array) of class indices, shape ``(N,)``, ``(N, d1, ...)`` or ``()``.
        ignore_index: target value whose rows are skipped (keyword; PyTorch's default -100).
        reduction: ``'mean'`` (default), ``'sum'`` or ``'none'`` (keyword).

    Returns:
        A 0-d tensor, or the per-row losses shaped like ``target`` for ``'none'``.

    Raises:
        TypeError: non-floating input or non-integer targets.
        ValueError: target shape that does not match, a target outside ``[0, C)``, or an unknown reduction.
    """
    check_float_tensor("nll_loss", log_probs)
    target = _target("nll_loss", target, log_probs, ignore_index)
    return NLLLoss.apply(log_probs, target, ignore_index=int(ignore_index),
                         reduction=_reduction("nll_loss", reduction))


def cross_entropy(logits: Tensor, target, label_smoothing: float = 0.0, *, ignore_index: int = -100,
                  reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy with integer targets (PyTorch's ``F.cross_entropy``, no class weights).

    With ``eps = label_smoothing`` and ``C`` classes, each row's loss is
    ``(1 - eps) * (-log_softmax(logits)[t]) + eps * mean_c(-log_softmax(logits)[c])``;
    the log-softmax uses log-sum-exp, so logits of magnitude 1e3 are fine. The backward
    pass is fused: ``d loss / d logits = softmax - ((1 - eps) onehot(t) + eps / C)``, scaled.

    Args:
        logits: ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)`` floating tensor of raw scores.
        target: integer Tensor (or array) of class indices, shape ``(N,)``, ``(N, d1, ...)`` or ``()``.
        label_smoothing: ``eps`` in ``[0, 1]``.
        ignore_index: target value whose rows are skipped (keyword; PyTorch's default -100).
        reduction: ``'mean'`` (default: average over the rows not ignored), ``'sum'`` or ``'none'``.

    Returns:
        A 0-d tensor, or the per-row losses shaped like ``target`` for ``'none'``.

    Raises:
        TypeError: non-floating logits, non-integer targets, or a non-number ``label_smoothing``.
        ValueError: target shape that does not match, a target outside ``[0, C)``,
            ``label_smoothing`` outside ``[0, 1]`` or an unknown reduction.
    """
    name = "cross_entropy"
    check_float_tensor(name, logits, "logits")
    if not isinstance(label_smoothing, numbers.Real) or isinstance(label_smoothing, bool):
        raise TypeError(f"{name}: label_smoothing must be a float, got {label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    target = _target(name, target, logits, ignore_index)
    return CrossEntropy.apply(logits, target, label_smoothing=float(label_smoothing),
                              ignore_index=int(ignore_index), reduction=_reduction(name, reduction))


__all__ = ["log_softmax", "softmax", "nll_loss", "cross_entropy", "LogSoftmax", "Softmax", "NLLLoss",
           "CrossEntropy"]
