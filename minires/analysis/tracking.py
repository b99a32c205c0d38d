"""Gradient flow during training: the skip/branch split and update sizes, recorded from the step itself.

:class:`GradientTracker` watches a model's training steps. Every ``every`` steps it
records, from that step's own forward and backward pass (no extra pass over the
network):

- per residual block call (forward order), with ``g`` the gradient at the block's sum
  ``F(x) + S(x)``: the norms of the skip term ``S^T g``, the branch term
  ``(dF/dx)^T g``, their sum ``dL/dx``, of ``g`` itself, their ratio and cosine (the
  quantities of :func:`~minires.analysis.trace_residual_stream`);
- per parameter tensor: the gradient norm, the weight norm before the update and the
  update-to-weight ratio ``||w_after - w_before|| / ||w_before||`` of the step.

How the block terms come out of the real backward pass: forward hooks on each block
keep the gradients of its input ``x`` and output ``y`` (``dL/dx`` and ``dL/dy``). The
post-add activation is ReLU or nothing (every block of :mod:`minires.models`), so
``g = dL/dy * 1[y > 0]`` (or ``dL/dy``) exactly. The skip term is the shortcut's own
VJP of ``g``: ``g`` itself for the identity, a re-run of the shortcut alone (subsample
and pad, or the 1x1 projection) otherwise, with the block's BN statistics put back.
The branch term is then ``dL/dx - S^T g``, which is exact because ``dL/dx`` is the sum
of the two terms. A block's forward is not touched (fusion stays on), so a tracked step
updates the weights exactly as an untracked one.

The ratio column, for the heatmaps:

- a block with a shortcut: ``||branch|| / ||skip||``, as :class:`~minires.analysis.BlockRecord`;
- a plain block (no shortcut): ``||branch|| / ||g||``, the block's input gradient against
  the gradient at its sum, i.e. against what an identity shortcut would have passed on
  unchanged. For an identity shortcut the two definitions coincide (``S^T g = g``); below
  1 the block shrinks the gradient it passes down, above 1 it amplifies it.

A record (one line of ``gradients.jsonl`` in a ``minires train --track-gradients N`` run)::

    {"step": 150, "epoch": 1, "loss": 1.93, "lr": 0.1,
     "blocks": [{"name": "layer1.0", "kind": "original", "skip": ..., "branch": ..., "sum": ...,
                 "grad_at_sum": ..., "ratio": ..., "cosine": ...}, ...],
     "params": [{"name": "conv1.weight", "shape": [16, 3, 3, 3], "grad_norm": ..., "weight_norm": ...,
                 "update_ratio": ...}, ...]}

``step`` counts the updates made before this one (0: the initial weights); ``skip``,
``branch``, ``sum`` (``= ||dL/dx||``) and ``grad_at_sum`` (``||g||``) are Euclidean norms;
``kind`` is ``'original'``, ``'preact'`` or ``'plain'`` (``skip`` 0, ``cosine`` null);
``null`` stands for a ratio with a zero denominator or a value that is not finite.

Example:
    >>> tracker = GradientTracker(model, every=50)
    >>> for step, (x, y) in enumerate(batches):
    ...     with tracker.step(step) as tracked:
    ...         loss = F.cross_entropy(model(x), y)
    ...         opt.zero_grad()
    ...         loss.backward()
    ...         tracked.measure(loss=loss.item())   # before the update
    ...         opt.step()
    ...     if tracked.record is not None:
    ...         append_jsonl("gradients.jsonl", tracked.record)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..autograd import Tensor, enable_grad
from ..backend import as_numpy, get_array_module
from ..nn import ReLU
from ..ops.activation import relu
from ._graph import vjp
from .blocks import find_blocks
from .stream import buffers_kept


@dataclass
class _BlockCall:
    name: str
    module: object
    parts: object
    x: Tensor
    y: Tensor


def _post_add_relu(name, module, parts) -> bool:
    """True for a ReLU after the add, False for none; other activations are refused."""
    act = parts.activation
    if act is None:
        return False
    if act is relu or isinstance(act, ReLU):
        return True
    raise ValueError(
        f"GradientTracker: block {name!r} ({type(module).__name__}) applies {act!r} after the add; tracking "
        "reads the gradient at the sum from the output's gradient, which needs a ReLU or no activation there")


class GradientTracker:
    """Records gradient flow every ``every`` training steps (see the module docstring).

    Args:
        model: the network being trained (its blocks are found by
            :func:`~minires.analysis.find_blocks`; a model without blocks gets only the
            per-parameter statistics).
        every: record on steps ``0, every, 2 * every, ...`` (``step`` counts the updates
            made before the step).

    Raises:
        ValueError: ``every`` is not a positive integer, or a block's post-add activation
            is neither ReLU nor absent.
        TypeError: a block is not a module that takes forward hooks.
    """

    def __init__(self, model, every: int):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"GradientTracker: every must be an integer >= 1, got {every!r}")
        self.model, self.every = model, every
        self.blocks = []
        for name, module, parts in find_blocks(model):
            if not hasattr(module, "register_forward_hook"):
                raise TypeError(f"GradientTracker: block {name!r} ({type(module).__name__}) is not an "
                                "nn.Module, so its calls cannot be watched with forward hooks")
            self.blocks.append((name, module, parts, _post_add_relu(name, module, parts)))
        self.params = list(model.named_parameters())

    def due(self, step: int) -> bool:
        """Whether step ``step`` (updates made before it) is recorded."""
        return step % self.every == 0

    def step(self, step: int) -> "TrackedStep":
        """A context manager around one training step; it records only when :meth:`due`."""
        return TrackedStep(self, step, self.due(step))


def tracked_step(tracker: Optional[GradientTracker], step: int) -> "TrackedStep":
    """``tracker.step(step)``, or a step that records nothing when ``tracker`` is ``None``."""
    return TrackedStep(tracker, step, tracker is not None and tracker.due(step))


class TrackedStep:
    """One training step under a :class:`GradientTracker` (made by :meth:`GradientTracker.step`).

    Attributes:
        step: the step number.
        active: whether this step is recorded.
        record: the JSON-able record after the ``with`` block (``None`` when not active,
            when :meth:`measure` was not called, or after an exception).
    """

    def __init__(self, tracker: GradientTracker, step: int, active: bool):
        self.tracker, self.step, self.active = tracker, step, active
        self.record: Optional[dict] = None
        self._calls: list = []
        self._handles: list = []
        self._before = None  # the weights before the update, between measure() and the end of the step
        self._param_norms = None

    def __enter__(self):
        if self.active:
            for name, module, parts, post_relu in self.tracker.blocks:
                self._handles.append(module.register_forward_pre_hook(_input_needs_grad))
                self._handles.append(module.register_forward_hook(self._watch(name, parts, post_relu)))
        return self

    def _watch(self, name, parts, post_relu):
        def hook(module, args, output):
            x = args[0]
            x.retain_grad()
            output.retain_grad()
            self._calls.append((_BlockCall(name, module, parts, x, output), post_relu))
        return hook

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def measure(self, **info) -> None:
        """Read the gradients; call it after ``backward`` and before the optimizer's update.

        Args:
            **info: JSON-able values stored in the record before the measurements
                (``epoch``, ``loss``, ``lr``, ...).
        """
        if not self.active:
            return
        self._remove_hooks()
        if self.tracker.blocks and not self._calls:
            raise RuntimeError("GradientTracker: measure() was called before the model's forward in this step")
        blocks = [_block_entry(call, post_relu) for call, post_relu in self._calls]
        self._calls = []
        params = self.tracker.params
        grads = [p.grad for _, p in params]
        norms = _norms([p.data for _, p in params] + [g for g in grads if g is not None])
        weight_norms, grad_iter = norms[:len(params)], iter(norms[len(params):])
        grad_norms = [None if g is None else next(grad_iter) for g in grads]
        self._before = [p.data.copy() for _, p in params]
        self.record = {"step": self.step, **info, "blocks": blocks}
        self._param_norms = (grad_norms, weight_norms)

    def __exit__(self, exc_type, *exc):
        self._remove_hooks()
        self._calls = []
        if exc_type is not None or self._before is None:
            self.record = None
            return False
        params = self.tracker.params
        updates = _norms([p.data - before for (_, p), before in zip(params, self._before)])
        self._before = None
        grad_norms, weight_norms = self._param_norms
        self.record["params"] = [
            {"name": name, "shape": list(p.shape), "grad_norm": _finite(g), "weight_norm": _finite(w),
             "update_ratio": _ratio(u, w)}
            for (name, p), g, w, u in zip(params, grad_norms, weight_norms, updates)]
        return False


def _input_needs_grad(module, args):
    """Forward pre-hook: a block input that does not require grad is replaced by a leaf that does."""
    x = args[0]
    if isinstance(x, Tensor) and not x.requires_grad:
        return (Tensor(x.data, requires_grad=True),) + tuple(args[1:])
    return None


def _block_entry(call: _BlockCall, post_relu: bool) -> dict:
    """The JSON entry of one block call: the norms of its gradient terms (see the module docstring)."""
    grad_in, grad_out = _grad(call.x), _grad(call.y)
    g = grad_out * (call.y.data > 0) if post_relu else grad_out
    if call.parts.shortcut is None:  # plain: the input gradient is all branch term
        sum_norm, g_norm = (math.sqrt(v) for v in _sums([(grad_in, grad_in), (g, g)]))
        skip_norm, branch_norm, cosine = 0.0, sum_norm, None
        ratio = _ratio(branch_norm, g_norm)
    else:
        skip = _skip_term(call, g)
        branch = grad_in - skip
        sums = _sums([(grad_in, grad_in), (g, g), (skip, skip), (branch, branch), (skip, branch)])
        sum_norm, g_norm, skip_norm, branch_norm = (math.sqrt(v) for v in sums[:4])
        cosine = sums[4] / (skip_norm * branch_norm) if skip_norm > 0 and branch_norm > 0 else None
        ratio = _ratio(branch_norm, skip_norm)
    return {"name": call.name, "kind": call.parts.kind, "skip": _finite(skip_norm), "branch": _finite(branch_norm),
            "sum": _finite(sum_norm), "grad_at_sum": _finite(g_norm), "ratio": ratio, "cosine": _finite(cosine)}


def _skip_term(call: _BlockCall, g):
    """``S^T g``: the shortcut run again on ``x`` alone, its VJP; BN running statistics put back."""
    with buffers_kept(call.module):
        x = Tensor(call.x.data, requires_grad=True)
        with enable_grad():
            s = call.parts.shortcut(x)
        return g if s is x else vjp(s, g, x)


def _grad(t: Tensor):
    return t.grad if t.grad is not None else get_array_module(t.data).zeros_like(t.data)


def _sums(pairs) -> list:
    """``[sum(a * b) for a, b in pairs]`` in float64, read back to the host in one copy."""
    if not pairs:
        return []
    xp = get_array_module(pairs[0][0])
    f64 = [(a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)) for a, b in pairs]
    return [float(v) for v in as_numpy(xp.stack([(a * b).sum() for a, b in f64]))]


def _norms(arrays) -> list:
    """Euclidean norms of ``arrays`` (float64 accumulation) as Python floats, one host copy."""
    return [math.sqrt(s) for s in _sums([(a, a) for a in arrays])]


def _finite(value):
    return value if value is not None and math.isfinite(value) else None


def _ratio(num, den):
    return _finite(num / den) if den is not None and den > 0 and math.isfinite(den) else None
