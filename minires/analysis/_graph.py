"""Graph utilities for the analysis tools: cut VJPs, a grad guard and a forward-mode tape.

Nothing here changes the engine or the recorded graph. A VJP with respect to an inner
tensor ``x`` is :func:`minires.autograd.grad` with ``x`` among the inputs, so the
traversal stops there; the graph must have been built once and kept
(``retain_graph=True``), so every VJP runs through the same saved buffers (the same
batch statistics of a BN in train mode).

Forward mode (:class:`OpTape`, :func:`tangent_of`) records each op applied while a tape
is active (class, inputs, options, output; :func:`minires.autograd.record_ops`) and
replays the recorded ops on tangents with one rule per op: linear ops rerun their own
forward on the tangent, the others have their derivative written out below.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..autograd import Tensor, grad, record_ops
from ..backend import get_array_module
from ..ops.arith import floor_divide_arrays, rpow_derivative

# ------------------------------------------------------------------------------------------
# reverse mode


class GradGuard:
    """Saves ``.grad`` (and the retain flag) of some tensors and puts them back on exit.

    Args:
        tensors: the tensors whose gradients must survive the extra backward passes
            (a model's parameters, the recorded block tensors).
    """

    def __init__(self, tensors):
        self.tensors = [t for t in tensors if isinstance(t, Tensor)]

    def __enter__(self):
        self.saved = [(t, t.grad) for t in self.tensors]
        return self

    def __exit__(self, *exc):
        for t, g in self.saved:
            t.grad = g
        return False


def vjp(outputs, grads, inputs, guard=()):
    """Vector-Jacobian products of recorded ``outputs`` with respect to inner tensors.

    Computes ``sum_k (d outputs[k] / d inputs[j])^T grads[k]`` for each ``j`` by one
    reverse traversal (:func:`minires.autograd.grad`) of the already-recorded graph,
    stopping at ``inputs``; the graph itself is not modified. The graph is
    kept (so later VJPs can reuse it) and no ``.grad`` outside ``inputs`` changes
    (those in ``guard`` are restored; ``inputs``' own ``.grad`` is restored too).

    Args:
        outputs: a ``Tensor`` or a list of them (recorded, ``requires_grad=True``), or
            an input tensor itself (then the VJP is the identity).
        grads: one array (or ``Tensor``) per output, shaped like it.
        inputs: a ``Tensor`` or a list of them on the path to ``outputs``.
        guard: further tensors whose ``.grad`` must be left untouched (parameters).

    Returns:
        One array per input (a zero array where an input does not reach the outputs);
        a single array when ``inputs`` is a single tensor.
    """
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if isinstance(outputs, Tensor):
        outputs, grads = [outputs], [grads]
    if len(outputs) != len(grads):
        raise ValueError(f"vjp: expected one gradient per output, got {len(grads)} for {len(outputs)}")
    grads = [g.data if isinstance(g, Tensor) else g for g in grads]
    for out, g in zip(outputs, grads):
        if tuple(g.shape) != out.shape:
            raise ValueError(f"vjp: gradient shape {tuple(g.shape)} does not match output shape {out.shape}")
    for t in inputs:
        if not t.requires_grad:
            raise ValueError("vjp: every input must require grad (be on the recorded path)")
    live = [(out, g) for out, g in zip(outputs, grads) if out.requires_grad]
    # outputs' and guarded tensors' .grad: grad() fills that of retain_grad tensors on the way
    with GradGuard(list(guard) + list(outputs) + inputs):
        arrived = grad([out for out, _ in live], inputs, [g for _, g in live],
                       retain_graph=True, allow_unused=True) if live else [None] * len(inputs)
    results = [get_array_module(t.data).zeros_like(t.data) if g is None else g.data
               for t, g in zip(inputs, arrived)]
    return results[0] if single else results


# ------------------------------------------------------------------------------------------
# forward mode


class OpTape:
    """Records ``(op class, inputs, options, output)`` for every ``Function.apply`` call.

    Use as a context manager; while active, the ops the calling thread applies are
    recorded in ``entries`` (:func:`minires.autograd.record_ops`: other threads' ops are
    not, and ``Function.apply`` is left as it is). Tapes nest (an outer tape also records
    the ops of an inner one); a tape that is recording cannot be entered again.
    Ops that override ``apply`` (device moves, casts) are not recorded.
    """

    def __init__(self):
        self.entries = []
        self._recorder = None

    def __enter__(self):
        if self._recorder is not None:
            raise RuntimeError("OpTape: this tape is already recording")
        self._recorder = record_ops(observer=self.entries.append)
        self._recorder.__enter__()
        return self

    def __exit__(self, *exc):
        recorder, self._recorder = self._recorder, None
        recorder.__exit__(*exc)
        return False


def _zeros(t):
    return get_array_module(t.data).zeros_like(t.data)


def _broadcast(tangent, shape):
    xp = get_array_module(tangent)
    return xp.broadcast_to(tangent, shape)


def _rerun(cls, tangents, inputs, options):
    """A linear op's tangent: the op itself applied to the tangents (zeros where None)."""
    arrays = [(_zeros(x) if t is None else t) if x is not None else None for x, t in zip(inputs, tangents)]
    return cls().forward(*arrays, **options)


def _data(x):
    return None if x is None else x.data


def _rule_add(cls, t, inputs, options, out):
    return sum(_broadcast(ti, out.shape) for ti in t if ti is not None)


def _rule_sub(cls, t, inputs, options, out):
    ta, tb = t
    result = 0 if ta is None else _broadcast(ta, out.shape)
    return result - (0 if tb is None else _broadcast(tb, out.shape))


def _rule_remainder(cls, t, inputs, options, out):
    # a mod b = a - b floor(a/b): d = da - floor(a/b) db, as the backward
    (ta, tb), (a, b) = t, inputs
    result = 0 if ta is None else _broadcast(ta, out.shape)
    if tb is not None:
        result = result - _broadcast(tb, out.shape) * floor_divide_arrays(a.data, b.data)
    return result


def _rule_mul(cls, t, inputs, options, out):
    (ta, tb), (a, b) = t, inputs
    # d(ab) = da b + a db
    parts = []
    if ta is not None:
        parts.append(ta * b.data)
    if tb is not None:
        parts.append(a.data * tb)
    return sum(_broadcast(p, out.shape) for p in parts)


def _rule_div(cls, t, inputs, options, out):
    (ta, tb), (a, b) = t, inputs
    # d(a/b) = da / b - a db / b^2
    parts = []
    if ta is not None:
        parts.append(ta / b.data)
    if tb is not None:
        parts.append(-a.data * tb / (b.data * b.data))
    return sum(_broadcast(p, out.shape) for p in parts)


def _rule_pow(cls, t, inputs, options, out):
    p = options["exponent"]
    # d(a^p) = p a^(p-1) da; for p = 0 it is 0 everywhere (also at a = 0, as the backward)
    if p == 0:
        return get_array_module(t[0]).zeros_like(t[0])
    return p * inputs[0].data ** (p - 1) * t[0]


def _rule_rpow(cls, t, inputs, options, out):
    # d(b^x) = b^x log(b) dx (0 for b = 0 where x >= 0, as the backward)
    return rpow_derivative(options["base"], inputs[0].data, out.data) * t[0]


def _rule_exp(cls, t, inputs, options, out):
    return out.data * t[0]  # d exp(a) = exp(a) da


def _rule_log(cls, t, inputs, options, out):
    return t[0] / inputs[0].data  # d log(a) = da / a


def _rule_sqrt(cls, t, inputs, options, out):
    return t[0] / (2 * out.data)  # d sqrt(a) = da / (2 sqrt(a))


def _rule_abs(cls, t, inputs, options, out):
    xp = get_array_module(t[0])
    return xp.sign(inputs[0].data) * t[0]  # d|a| = sign(a) da


def _rule_matmul(cls, t, inputs, options, out):
    (ta, tb), (a, b) = t, inputs
    # d(ab) = da b + a db
    parts = []
    if ta is not None:
        parts.append(ta @ b.data)
    if tb is not None:
        parts.append(a.data @ tb)
    return sum(parts)


def _rule_pad(cls, t, inputs, options, out):
    # padding with a constant is affine: the tangent is padded with zeros
    return cls().forward(t[0], pad_width=options["pad_width"], value=0)


def _rule_max(cls, t, inputs, options, out):
    a = inputs[0].data
    axis, keepdims = options["axis"], options["keepdims"]
    top = a.max(axis=axis, keepdims=True)
    mask = a == top
    # the tangent of the maximum: the mean tangent over tied maxima (as the backward splits them)
    tangent = (t[0] * mask).sum(axis=axis, keepdims=True) / mask.sum(axis=axis, keepdims=True)
    if keepdims:
        return tangent
    return tangent.reshape(()) if axis is None else get_array_module(a).squeeze(tangent, axis=axis)


def _rule_relu(cls, t, inputs, options, out):
    return t[0] * (out.data > 0)  # d relu(a) = 1[a > 0] da


def _rule_sigmoid(cls, t, inputs, options, out):
    s = out.data
    return t[0] * s * (1 - s)  # d s(a) = s (1 - s) da


def _rule_conv2d(cls, t, inputs, options, out):
    (tx, tw, tb), (x, w, b) = t, inputs
    # conv(x, w) + b is bilinear in (x, w) plus b
    parts = []
    if tx is not None:
        parts.append(cls().forward(tx, w.data, None, **options))
    if tw is not None:
        parts.append(cls().forward(x.data, tw, None, **options))
    if tb is not None:
        parts.append(_broadcast(tb.reshape(1, -1, 1, 1), out.shape))
    return sum(parts)


def _rule_linear(cls, t, inputs, options, out):
    tx, tw = t[0], t[1]
    tb = t[2] if len(t) > 2 else None
    x, w = inputs[0], inputs[1]
    # x W^T + b is bilinear in (x, W) plus b
    parts = []
    if tx is not None:
        parts.append(tx @ w.data.T)
    if tw is not None:
        parts.append(x.data @ tw.T)
    if tb is not None:
        parts.append(_broadcast(tb, out.shape))
    return sum(parts)


def _rule_batch_norm(cls, t, inputs, options, out):
    # inputs: x, weight, bias and (fused relu(bn(x) + addend) only) the addend
    (tx, tw, tb), (x, w, b) = t[:3], inputs[:3]
    ta = t[3] if len(t) > 3 else None
    xp = get_array_module(out.data)
    xd = x.data
    axes = (0,) + tuple(range(2, xd.ndim))
    bshape = (1, -1) + (1,) * (xd.ndim - 2)
    eps = options["eps"]
    if options["training"]:
        mean = xd.mean(axis=axes, keepdims=True)
        inv_std = 1.0 / xp.sqrt(xd.var(axis=axes, keepdims=True) + eps)
    else:
        mean = options["running_mean"].reshape(bshape)
        inv_std = 1.0 / xp.sqrt(options["running_var"].reshape(bshape) + eps)
    x_hat = (xd - mean) * inv_std
    parts = []
    if tx is not None:
        if options["training"]:
            # batch statistics move with x: d x_hat = inv_std (dx - mean(dx) - x_hat mean(x_hat dx))
            d_hat = inv_std * (tx - tx.mean(axis=axes, keepdims=True)
                               - x_hat * (x_hat * tx).mean(axis=axes, keepdims=True))
        else:
            d_hat = inv_std * tx  # fixed running statistics: an affine map
        parts.append(d_hat if w is None else w.data.reshape(bshape) * d_hat)
    if tw is not None:
        parts.append(tw.reshape(bshape) * x_hat)
    if tb is not None:
        parts.append(_broadcast(tb.reshape(bshape), out.shape))
    if ta is not None:
        parts.append(ta)
    tangent = sum(parts)
    if options.get("relu"):
        tangent = tangent * (out.data > 0)  # the fused ReLU: 1[out > 0]
    return tangent


_LINEAR_OPS = {"Reshape", "Permute", "GetItem", "Cat", "Stack", "Sum", "Mean", "Neg",
               "AvgPool2d", "AdaptiveAvgPool2d", "Identity", "Flatten", "Transpose"}

_RULES = {
    "Add": _rule_add, "Sub": _rule_sub, "Mul": _rule_mul, "Div": _rule_div, "Pow": _rule_pow,
    "RPow": _rule_rpow, "Remainder": _rule_remainder, "Exp": _rule_exp, "Log": _rule_log,
    "Sqrt": _rule_sqrt, "Abs": _rule_abs,
    "Matmul": _rule_matmul,
    "Pad": _rule_pad, "Max": _rule_max, "ReLU": _rule_relu, "Relu": _rule_relu,
    "Sigmoid": _rule_sigmoid, "Conv2d": _rule_conv2d, "Linear": _rule_linear,
    "BatchNorm": _rule_batch_norm,
}


def register_jvp_rule(op_class_name: str, rule) -> None:
    """Add (or replace) the forward-mode rule of an op class.

    Args:
        op_class_name: the ``Function`` subclass's ``__name__``.
        rule: ``rule(cls, tangents, inputs, options, output) -> tangent array`` where
            ``tangents`` holds one array or ``None`` (zero) per positional input and
            ``inputs`` are the recorded input tensors.
    """
    _RULES[op_class_name] = rule


def register_linear_op(op_class_name: str) -> None:
    """Declare an op linear in its inputs jointly: its tangent is the op applied to the tangents."""
    _LINEAR_OPS.add(op_class_name)


def tangent_of(tape: OpTape, seeds: dict, output: Tensor):
    """Push tangents through the recorded ops and return the tangent of ``output``.

    Args:
        tape: a finished :class:`OpTape`.
        seeds: ``{id(tensor): tangent array}`` for the inputs being perturbed.
        output: a tensor produced while the tape recorded.

    Returns:
        The tangent array of ``output`` (zeros if it does not depend on the seeds).

    Raises:
        NotImplementedError: an op on the path has no forward-mode rule.
    """
    tangents = dict(seeds)
    for cls, inputs, options, out in tape.entries:
        t = [None if x is None else tangents.get(id(x)) for x in inputs]
        if all(ti is None for ti in t):
            continue
        name = cls.__name__
        if name in _RULES:
            tangent = _RULES[name](cls, t, inputs, options, out)
        elif name in _LINEAR_OPS:
            tangent = _rerun(cls, t, inputs, options)
        else:
            raise NotImplementedError(
                f"forward-mode JVP: no rule for op {name}; add one with "
                "minires.analysis.register_jvp_rule"
            )
        xp = get_array_module(out.data)
        tangents[id(out)] = xp.asarray(tangent, dtype=out.data.dtype).reshape(out.data.shape)
    if id(output) in tangents:
        return tangents[id(output)]
    return get_array_module(output.data).zeros_like(output.data)


@contextlib.contextmanager
def recording():
    """Context manager yielding an active :class:`OpTape`."""
    with OpTape() as tape:
        yield tape


def flat_norm(array) -> float:
    """The Euclidean norm of an array of any shape, as a Python float (float64 accumulation)."""
    xp = get_array_module(array)
    a = array.astype(np.float64, copy=False) if array.dtype != np.float64 else array
    return float(xp.sqrt((a * a).sum()))
