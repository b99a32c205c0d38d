"""Graph utilities for the analysis tools: cut VJPs, a grad guard and a forward-mode tape.

Nothing here changes the engine or the recorded graph. A VJP with respect to an inner
tensor ``x`` is :func:`minires.autograd.grad` with ``x`` among the inputs, so the
traversal stops there; the graph must have been built once and kept
(``retain_graph=True``), so every VJP runs through the same saved buffers (the same
batch statistics of a BN in train mode).

Forward mode (:class:`OpTape`, :func:`tangent_of`) records each op applied while a tape
is active (class, inputs, options, output; :func:`minires.autograd.record_ops`) and
replays the recorded ops on tangents with each op's ``jvp`` method (written beside its
forward and backward; linear ops rerun their own forward on the tangent).
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor, grad, record_ops
from ..backend import get_array_module

# ------------------------------------------------------------------------------------------
# reverse mode


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
    # outputs' and guarded tensors' .grad are put back: grad() fills that of retain_grad tensors on the way
    kept = [(t, t.grad) for t in list(guard) + list(outputs) + inputs if isinstance(t, Tensor)]
    try:
        arrived = grad([out for out, _ in live], inputs, [g for _, g in live],
                       retain_graph=True, allow_unused=True) if live else [None] * len(inputs)
    finally:
        for t, g in kept:
            t.grad = g
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


_RULES: dict = {}  # op class -> rule(cls, tangents, inputs, options, output), registered from outside


def register_jvp_rule(op_class, rule) -> None:
    """Add (or replace) the forward-mode rule of an op class that has no ``jvp`` method of its own.

    A ``Function`` subclass under your control should rather define ``jvp`` itself (see
    :class:`minires.autograd.Function`); a registered rule takes precedence over it.

    Args:
        op_class: the ``Function`` subclass (the class itself, not its name).
        rule: ``rule(cls, tangents, inputs, options, output) -> tangent array`` where
            ``tangents`` holds one array or ``None`` (zero) per positional input and
            ``inputs`` are the recorded input tensors.
    """
    if not (isinstance(op_class, type) and issubclass(op_class, Function)):
        raise TypeError(f"register_jvp_rule: expected a Function subclass, got {op_class!r}; "
                        "pass the class itself (e.g. minires.ops.arith.Mul), not its name")
    _RULES[op_class] = rule


def _linear_rule(cls, tangents, inputs, options, output):
    return cls().linear_jvp(tangents, [_data(x) for x in inputs], output.data, **options)


def register_linear_op(op_class) -> None:
    """Declare an op linear in its inputs jointly: its tangent is the op applied to the tangents.

    The same as ``jvp = Function.linear_jvp`` in the class body, for a class you cannot edit.
    """
    register_jvp_rule(op_class, _linear_rule)


def _data(x):
    return None if x is None else x.data


def _tangent(cls, tangents, inputs, options, out):
    rule = _RULES.get(cls)
    if rule is not None:
        return rule(cls, tangents, inputs, options, out)
    return cls().jvp(tangents, [_data(x) for x in inputs], out.data, **options)


def tangent_of(tape: OpTape, seeds: dict, output: Tensor):
    """Push tangents through the recorded ops and return the tangent of ``output``.

    Args:
        tape: a finished :class:`OpTape`.
        seeds: ``{id(tensor): tangent array}`` for the inputs being perturbed.
        output: a tensor produced while the tape recorded (or a seeded tensor itself).

    Returns:
        The tangent array of ``output``.

    Raises:
        NotImplementedError: an op on the path has no forward-mode rule.
        ValueError: ``output`` does not depend on the seeded tensors through recorded ops.
    """
    tangents = dict(seeds)
    for cls, inputs, options, out in tape.entries:
        t = [None if x is None else tangents.get(id(x)) for x in inputs]
        if all(ti is None for ti in t):
            continue
        tangent = _tangent(cls, t, inputs, options, out)
        if tangent is not None:
            xp = get_array_module(out.data)
            tangents[id(out)] = xp.asarray(tangent, dtype=out.data.dtype).reshape(out.data.shape)
    if id(output) not in tangents:
        raise ValueError(
            "forward-mode JVP: the output does not depend on the input through ops minires recorded; "
            "the function may leave minires (.numpy(), .data, NumPy arrays), detach the input, cast it to an "
            "integer dtype, or return a tensor computed before it was called")
    return tangents[id(output)]


def flat_norm(array) -> float:
    """The Euclidean norm of an array of any shape, as a Python float (float64 accumulation)."""
    xp = get_array_module(array)
    a = array.astype(np.float64, copy=False)
    return float(xp.sqrt((a * a).sum()))
