"""Softmax, log-softmax, negative log-likelihood and fused softmax cross-entropy.

All functions work on NumPy or CuPy arrays (no autograd).

- ``log_softmax(x) = x - max - log(sum(exp(x - max)))`` along one axis (log-sum-exp, so
  logits of magnitude 1e3 and beyond stay finite); its vector-Jacobian product is
  ``g - exp(out) * sum(g)``.
- ``softmax(x) = exp(x - max) / sum(exp(x - max))``; VJP ``out * (g - sum(g * out))``.
- Cross-entropy on rows ``(M, C)`` with integer targets ``t`` and label smoothing ``eps``
  (PyTorch's definition): ``loss_m = (1 - eps) * (-logp[m, t_m]) + eps * mean_c(-logp[m, c])``.
  Rows whose target equals ``ignore_index`` get loss 0 and no gradient. The fused
  gradient is ``d loss_m / d logits[m, c] = softmax[m, c] - q[m, c]`` with
  ``q = (1 - eps) onehot(t_m) + eps / C``, scaled per row by the upstream gradient (one
  pass; on the GPU a named ``ElementwiseKernel``).

The row functions keep the class axis last (``(M, C)``); callers move it there.
"""

from __future__ import annotations

import numpy as np

from .. import backend


def log_softmax_forward(x, axis: int = -1):
    """``log(softmax(x))`` along ``axis``, computed stably with the log-sum-exp shift."""
    xp = backend.get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    total = xp.exp(shifted).sum(axis=axis, keepdims=True)
    shifted -= xp.log(total)
    return shifted


def log_softmax_backward(grad, out, axis: int = -1):
    """VJP of :func:`log_softmax_forward` given its output: ``g - exp(out) * sum(g)``."""
    xp = backend.get_array_module(grad)
    result = xp.exp(out)
    result *= -grad.sum(axis=axis, keepdims=True)
    result += grad
    return result


def softmax_forward(x, axis: int = -1):
    """``exp(x) / sum(exp(x))`` along ``axis``, computed stably."""
    xp = backend.get_array_module(x)
    out = xp.exp(x - x.max(axis=axis, keepdims=True))
    out /= out.sum(axis=axis, keepdims=True)
    return out


def softmax_backward(grad, out, axis: int = -1):
    """VJP of :func:`softmax_forward` given its output: ``out * (g - sum(g * out))``."""
    result = grad - (grad * out).sum(axis=axis, keepdims=True)
    result *= out
    return result


def _safe_target(target, ignore_index: int):
    """``(valid, target with ignored rows replaced by class 0)``, for gathering."""
    xp = backend.get_array_module(target)
    valid = target != ignore_index
    return valid, xp.where(valid, target, 0)


def nll_rows(log_probs, target, ignore_index: int = -100):
    """Per-row ``-log_probs[m, target[m]]`` of ``(M, C)`` rows (0 where ignored)."""
    xp = backend.get_array_module(log_probs)
    valid, safe = _safe_target(target, ignore_index)
    picked = xp.take_along_axis(log_probs, safe[:, None], axis=1)[:, 0]
    return xp.where(valid, -picked, log_probs.dtype.type(0))


def nll_rows_backward(scale, target, shape, dtype, ignore_index: int = -100):
    """Gradient of ``sum_m scale[m] * nll_rows[m]``: ``-scale[m]`` at each target, 0 elsewhere."""
    xp = backend.get_array_module(scale)
    valid, safe = _safe_target(target, ignore_index)
    grad = xp.zeros(shape, dtype=dtype)
    rows = xp.arange(shape[0])
    grad[rows, safe] = xp.where(valid, -scale, dtype.type(0))
    return grad


def cross_entropy_rows(logits, target, label_smoothing: float = 0.0, ignore_index: int = -100):
    """Per-row cross-entropy of ``(M, C)`` logits against ``(M,)`` integer targets.

    Args:
        logits: ``(M, C)`` floating array.
        target: ``(M,)`` integer class indices in ``[0, C)`` or ``ignore_index``.
        label_smoothing: ``eps`` in ``[0, 1]``.
        ignore_index: target value whose rows count as loss 0.

    Returns:
        ``(losses, log_probs)``: the ``(M,)`` per-row losses and the ``(M, C)`` log-softmax
        (keep it for :func:`cross_entropy_rows_backward`).
    """
    log_probs = log_softmax_forward(logits, axis=1)
    losses = nll_rows(log_probs, target, ignore_index)
    if label_smoothing:
        xp = backend.get_array_module(logits)
        smooth = xp.where(target != ignore_index, -log_probs.mean(axis=1), logits.dtype.type(0))
        losses = (1 - label_smoothing) * losses + label_smoothing * smooth
    return losses, log_probs


def cross_entropy_rows_backward_cpu(scale, log_probs, target, label_smoothing: float = 0.0,
                                    ignore_index: int = -100):
    """Fused gradient ``(softmax - q) * scale[:, None]`` on NumPy (see module docstring)."""
    M, C = log_probs.shape
    dtype = log_probs.dtype.type
    _, safe = _safe_target(target, ignore_index)
    rows = np.arange(M)
    grad = np.exp(log_probs)
    # q is rounded once per entry (q_t = 1 - eps + eps/C in float64, then cast), so a row
    # with p_t = 1 and q_t = 1 (e.g. C = 1) gets exactly 0, as PyTorch's gradient does
    picked = grad[rows, safe]
    if label_smoothing:
        grad -= dtype(label_smoothing / C)
    grad[rows, safe] = picked - dtype(1 - label_smoothing + label_smoothing / C)
    grad *= scale[:, None]
    return grad


def cross_entropy_rows_backward_gpu(scale, log_probs, target, label_smoothing: float = 0.0,
                                    ignore_index: int = -100):
    """CuPy twin of :func:`cross_entropy_rows_backward_cpu`: one fused pass."""
    cp = backend.cupy_module()
    M, C = log_probs.shape
    kernel = backend.elementwise_kernel(
        "minires_softmax_cross_entropy_backward",
        "T log_prob, int64 t, T scale, int64 C, float64 smoothing", "T gx",
        "const long long c = i % C; "
        "const T q = (T)(c == t ? 1.0 - smoothing + smoothing / C : smoothing / C); "
        "gx = (exp(log_prob) - q) * scale")
    return kernel(log_probs, target.astype(cp.int64, copy=False)[:, None], scale[:, None],
                  C, float(label_smoothing))


def cross_entropy_rows_backward(scale, log_probs, target, label_smoothing: float = 0.0,
                                ignore_index: int = -100):
    """Gradient of ``sum_m scale[m] * loss_m`` with respect to the ``(M, C)`` logits.

    Args:
        scale: ``(M,)`` upstream gradient per row (already 0 on ignored rows, already
            divided by the count for a mean).
        log_probs: the ``(M, C)`` log-softmax saved by :func:`cross_entropy_rows`.
        target: ``(M,)`` integer targets.
        label_smoothing: ``eps`` of the forward pass.
        ignore_index: target value of ignored rows.

    Returns:
        ``(M, C)`` array ``(softmax - q) * scale[:, None]``.
    """
    impl = cross_entropy_rows_backward_gpu if backend.is_cupy_array(log_probs) \
        else cross_entropy_rows_backward_cpu
    return impl(scale, log_probs, target, label_smoothing, ignore_index)


__all__ = [
    "log_softmax_forward", "log_softmax_backward", "softmax_forward", "softmax_backward",
    "nll_rows", "nll_rows_backward", "cross_entropy_rows", "cross_entropy_rows_backward",
    "cross_entropy_rows_backward_cpu", "cross_entropy_rows_backward_gpu",
]
