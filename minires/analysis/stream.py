"""The gradient of the residual stream, block by block.

For a block ``y = sigma(F(x) + S(x))`` and ``g = dL/dy * sigma'`` (the gradient at the
sum), backpropagation gives

    dL/dx = S^T g + (dF/dx)^T g,

the skip term and the branch term. :func:`trace_residual_stream` runs the model forward
and backward once, keeps the graph, and takes the two VJPs separately through that same
graph (so a BN in train mode, whose batch statistics couple the samples, is
differentiated exactly as in the real backward); the sum matches the engine's own
``dL/dx`` to rounding.

For pre-activation blocks (no ``sigma``) with identity shortcuts, He et al. (2016, eq. 5)
unroll the stream: ``x_L = x_l + sum_{i=l}^{L-1} F_i(x_i)``, so

    dL/dx_l = dL/dx_L + (d sum_i F_i / dx_l)^T dL/dx_L,

computed by :func:`preact_decomposition`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..autograd import Tensor
from ..backend import as_numpy, get_array_module
from ..ops.loss import cross_entropy
from ._graph import flat_norm, vjp
from .blocks import find_blocks


@dataclass
class BlockRecord:
    """What one block does to the gradient.

    Attributes:
        name: the block's module path (``layer2.0``).
        index: its position in forward order (0 = first block).
        kind: ``'original'``, ``'preact'`` or ``'plain'``.
        shortcut_kind: ``'identity'``, ``'A'``, ``'B'``, ... as the block describes itself.
        x: the block input (array) or ``None`` when tensors were not kept.
        grad_in: ``dL/dx`` as the engine's backward computed it.
        grad_out: ``dL/dy`` (``y`` the block output); equals the next block's ``grad_in``.
        grad_pre: ``g``, the gradient at the sum ``F(x) + S(x)``.
        skip_term: ``S^T g`` (zeros for a plain block).
        branch_term: ``(dF/dx)^T g``.
        norms: Euclidean norms (``grad_in``, ``grad_out``, ``skip``, ``branch``, ``x``,
            ``branch_out`` = ``||F(x)||``, ``shortcut_out`` = ``||S(x)||``).
        ratio: ``||branch|| / ||skip||`` (inf for a plain block).
        cosine: cosine between skip and branch terms (nan for a plain block).
        blocked_fraction: fraction of units of the sum the post-add ReLU zeroes
            (``None`` without a post-add activation).
        identity_error: ``max|skip + branch - grad_in| / max|grad_in|``.
    """

    name: str
    index: int
    kind: str
    shortcut_kind: str
    x: Optional[np.ndarray] = None
    grad_in: Optional[np.ndarray] = None
    grad_out: Optional[np.ndarray] = None
    grad_pre: Optional[np.ndarray] = None
    skip_term: Optional[np.ndarray] = None
    branch_term: Optional[np.ndarray] = None
    norms: dict = field(default_factory=dict)
    ratio: float = float("nan")
    cosine: float = float("nan")
    blocked_fraction: Optional[float] = None
    identity_error: float = float("nan")

    def as_row(self) -> dict:
        """A flat dict of the scalar fields (one table row)."""
        norms = {f"norm_{key}": self.norms.get(key, float("nan")) for key in ("grad_out", "grad_in", "skip", "branch")}
        return {"index": self.index, "name": self.name, "kind": self.kind, "shortcut": self.shortcut_kind, **norms,
                "ratio_branch_skip": self.ratio, "cosine_skip_branch": self.cosine,
                "blocked_fraction": self.blocked_fraction if self.blocked_fraction is not None else float("nan"),
                "identity_error": self.identity_error}


@dataclass
class _Call:
    name: str
    parts: object
    x: Tensor
    f: Tensor
    s: Optional[Tensor]
    pre: Tensor
    y: Tensor


def _parameters(model) -> list:
    return list(model.parameters()) if hasattr(model, "parameters") else []


@contextlib.contextmanager
def param_grads_kept(model):
    """The parameters' ``.grad`` is ``None`` inside the block and as before after it (analysis is
    read-only); yields the list that receives the gradients computed inside, in parameter order."""
    params = _parameters(model)
    saved, computed = [p.grad for p in params], []
    for p in params:
        p.grad = None
    try:
        yield computed
    finally:
        computed.extend(p.grad for p in params)
        for p, g in zip(params, saved):
            p.grad = g


@contextlib.contextmanager
def buffers_kept(model):
    """On leaving the block, ``model``'s buffers (BN running statistics) hold what they held on entering it."""
    buffers = [b.data if isinstance(b, Tensor) else b for b in model.buffers()] if hasattr(model, "buffers") else []
    saved = [(array, array.copy()) for array in buffers if hasattr(array, "copy")]
    try:
        yield
    finally:
        for array, copy in saved:
            array[...] = copy


class TracedRun:
    """One forward and backward of ``model`` with every block split into its parts.

    The graph is kept, so further VJPs through any block can follow. Use as a context
    manager (or call :meth:`close`) to put the blocks' ``forward`` back and the BN running
    statistics as they were.

    Args:
        model: a module whose blocks :func:`~minires.analysis.blocks.find_blocks` finds.
        x: input batch (``Tensor`` or array).
        target: integer class labels (``Tensor`` or array), or ``None`` with a ``loss``
            that takes only the output.
        loss: ``loss(output, target) -> scalar Tensor``; mean cross-entropy by default.
        restore_state: put BN running statistics back after the forward.
        backward: run the backward pass (``False``: forward only, to capture block inputs).

    Attributes:
        calls: one entry per block call in forward order (``name, parts, x, f, s, pre, y``).
        loss: the loss value (float).
        input: the input tensor (its ``.grad`` is ``dL/d input``).
        output: the model output tensor.
        param_grads: ``{name: dL/dparam}`` from this run's backward (the parameters'
            own ``.grad`` is left as it was).
    """

    def __init__(self, model, x, target, loss=None, restore_state: bool = True, backward: bool = True):
        blocks = find_blocks(model)
        if not blocks:
            raise ValueError(
                f"trace: found no residual or plain blocks in {type(model).__name__}; a block needs a "
                "residual_branch method (see minires.analysis.blocks)"
            )
        loss = cross_entropy if loss is None else loss
        if not callable(loss):
            raise TypeError(f"trace: expected loss to be callable(output, target), got {type(loss).__name__}")
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if data.dtype.kind != "f":
            raise TypeError(f"trace: expected a floating input batch, got dtype {data.dtype}")
        self.model = model
        self.blocks = blocks
        self.calls: list = []
        self.input = Tensor(data, requires_grad=True)
        if target is not None and not isinstance(target, Tensor):
            target = Tensor(get_array_module(data).asarray(target))
        installed = []
        with buffers_kept(model) if restore_state else contextlib.nullcontext():
            try:
                for name, module, parts in blocks:
                    installed.append((module, "forward" in vars(module), vars(module).get("forward")))
                    module.forward = self._traced_forward(name, parts)
                self.output = model(self.input)
                value = loss(self.output, target) if target is not None else loss(self.output)
            finally:
                for module, had, previous in installed:
                    if had:
                        module.forward = previous
                    else:
                        del module.forward
        if not isinstance(value, Tensor) or value.data.size != 1:
            raise ValueError("trace: the loss must return a one-element Tensor")
        self.loss_tensor = value
        self.loss = float(value.item())
        self.parameters = _parameters(model)
        self.param_grads = {}
        if backward:
            with param_grads_kept(model) as grads:
                value.backward(retain_graph=True)
            if hasattr(model, "named_parameters"):
                self.param_grads = {name: g for (name, _), g in zip(model.named_parameters(), grads)}

    def _traced_forward(self, name, parts):
        def forward(x, *args, **kwargs):
            if args or kwargs:
                raise TypeError(f"trace: block {name} was called with extra arguments")
            if not x.requires_grad:
                x = Tensor(x.data, requires_grad=True)
            f = parts.branch(x)
            s = parts.shortcut(x) if parts.shortcut is not None else None
            pre = f if s is None else f + s
            y = parts.activation(pre) if parts.activation is not None else pre
            for t in (x, pre, y):
                if t.requires_grad:
                    t.retain_grad()
            self.calls.append(_Call(name, parts, x, f, s, pre, y))
            return y

        return forward

    def guard(self) -> list:
        """Tensors whose ``.grad`` extra VJPs must not disturb."""
        out = list(self.parameters) + [self.input]
        for c in self.calls:
            out += [c.x, c.pre, c.y]
        return out

    def grad_of(self, t: Tensor):
        """``t.grad``, or zeros when nothing flowed back into ``t``."""
        return t.grad if t.grad is not None else get_array_module(t.data).zeros_like(t.data)

    def close(self) -> None:
        """Drop the graph and the recorded tensors."""
        self.calls = []
        self.output = self.loss_tensor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _cosine(a, b) -> float:
    na, nb = flat_norm(a), flat_norm(b)
    if na == 0.0 or nb == 0.0:
        return float("nan")
    xp = get_array_module(a)
    return float((a.astype(xp.float64) * b.astype(xp.float64)).sum()) / (na * nb)


def _relative_error(total, reference) -> float:
    """``max|total - reference| / max|reference|`` (the absolute error where ``reference`` is all 0)."""
    scale, err = (float(abs(a).max()) if a.size else 0.0 for a in (reference, total - reference))
    return err / scale if scale > 0 else err


def block_terms(run: TracedRun, call: _Call):
    """``(grad_in, grad_out, g, skip_term, branch_term)`` of one traced block call."""
    g = run.grad_of(call.pre)
    guard = run.guard()
    branch_term = vjp(call.f, g, call.x, guard=guard)
    if call.s is None:
        skip_term = get_array_module(g).zeros_like(run.grad_of(call.x))
    else:
        skip_term = vjp(call.s, g, call.x, guard=guard)
    return run.grad_of(call.x), run.grad_of(call.y), g, skip_term, branch_term


def trace_residual_stream(model, x, target, loss=None, keep_tensors: bool = True):
    """Split the gradient at every residual block into its skip and branch terms.

    One forward and one backward of ``model`` on ``(x, target)``; then, per block in
    forward order, the VJPs ``S^T g`` and ``(dF/dx)^T g`` with ``g = dL/dy * sigma'``,
    each through the recorded graph (exact under BN in train mode).

    Args:
        model: a network built from blocks with ``residual_branch``/``shortcut`` parts
            (every :mod:`minires.models` CIFAR ResNet, pre-activation or plain net).
        x: input batch ``(N, C, H, W)``.
        target: class labels ``(N,)``.
        loss: ``loss(output, target) -> scalar``; mean cross-entropy by default.
        keep_tensors: keep the arrays (``x``, ``grad_in``, ...) on the records as NumPy
            arrays; ``False`` keeps only the norms and ratios (much less memory).

    Returns:
        A list of :class:`BlockRecord`, one per block call, in forward order.
        ``skip_term + branch_term`` equals ``grad_in`` to rounding, and each record's
        ``grad_out`` is the next one's ``grad_in``.

    Example:
        >>> records = trace_residual_stream(resnet20(), images, labels)
        >>> [round(r.ratio, 2) for r in records]
    """
    with TracedRun(model, x, target, loss) as run:
        return records_from_run(run, keep_tensors)


def records_from_run(run: TracedRun, keep_tensors: bool = False) -> list:
    """The :class:`BlockRecord` list of an open :class:`TracedRun` (see :func:`trace_residual_stream`)."""
    records = []
    for index, call in enumerate(run.calls):
        grad_in, grad_out, g, skip, branch = block_terms(run, call)
        rec = BlockRecord(name=call.name, index=index, kind=call.parts.kind,
                          shortcut_kind=call.parts.shortcut_kind)
        rec.norms = {
            "grad_in": flat_norm(grad_in), "grad_out": flat_norm(grad_out), "grad_pre": flat_norm(g),
            "skip": flat_norm(skip), "branch": flat_norm(branch), "x": flat_norm(call.x.data),
            "branch_out": flat_norm(call.f.data),
            "shortcut_out": flat_norm(call.s.data) if call.s is not None else 0.0,
        }
        skip_norm = rec.norms["skip"]
        rec.ratio = rec.norms["branch"] / skip_norm if skip_norm > 0 else float("inf")
        rec.cosine = _cosine(skip, branch) if call.s is not None else float("nan")
        if call.parts.activation is not None:
            rec.blocked_fraction = float((call.pre.data <= 0).mean())
        rec.identity_error = _relative_error(skip + branch, grad_in)
        if keep_tensors:
            rec.x, rec.grad_in, rec.grad_out = as_numpy(call.x.data), as_numpy(grad_in), as_numpy(grad_out)
            rec.grad_pre, rec.skip_term, rec.branch_term = as_numpy(g), as_numpy(skip), as_numpy(branch)
        records.append(rec)
    return records


@dataclass
class PreactTerm:
    """The eq. 5 split of ``dL/dx_l`` for one pre-activation block.

    Attributes:
        name: block ``l``.
        end: the block whose input is ``x_L`` (the first later block with a non-identity
            shortcut), or ``'output'`` when the identity run reaches the last block.
        direct_term: ``dL/dx_L``, carried unchanged by the identity shortcuts.
        residual_term: ``(d sum_{i=l}^{L-1} F_i / dx_l)^T dL/dx_L``.
        grad_in: ``dL/dx_l`` from the engine's backward.
        error: ``max|direct + residual - grad_in| / max|grad_in|``.
        blocks: how many branches ``F_i`` the sum runs over (``L - l``).
    """

    name: str
    end: str
    direct_term: Optional[np.ndarray]
    residual_term: Optional[np.ndarray]
    grad_in: Optional[np.ndarray]
    error: float
    blocks: int
    norms: dict = field(default_factory=dict)


def _is_identity(call) -> bool:
    return call.s is call.x


def preact_decomposition(model, x, target, loss=None, keep_tensors: bool = True):
    """He et al. (2016) eq. 5 for every pre-activation block with an identity shortcut.

    For block ``l`` and the end ``L`` of its run of identity-shortcut blocks,
    ``x_L = x_l + sum_{i=l}^{L-1} F_i(x_i)``, hence
    ``dL/dx_l = dL/dx_L + (d sum_i F_i / dx_l)^T dL/dx_L``. Both terms are computed
    (the second by one VJP of ``sum_i <F_i(x_i), dL/dx_L>`` back to ``x_l``) and checked
    against the engine's ``dL/dx_l``.

    Args:
        model: a network of pre-activation blocks (``preact_resnet*``).
        x, target, loss: as for :func:`trace_residual_stream`.
        keep_tensors: keep the arrays on the results.

    Returns:
        A list of :class:`PreactTerm`, in forward order, for the blocks with an identity
        shortcut.

    Raises:
        ValueError: the model has no pre-activation blocks.
    """
    out = []
    with TracedRun(model, x, target, loss) as run:
        calls = run.calls
        if not any(c.parts.kind == "preact" for c in calls):
            raise ValueError(
                "preact_decomposition: eq. 5 needs pre-activation blocks (no activation after the add); "
                f"the blocks of {type(model).__name__} are {sorted({c.parts.kind for c in calls})}"
            )
        guard = run.guard()
        for l, call in enumerate(calls):
            if call.parts.kind != "preact" or not _is_identity(call):
                continue
            end = l + 1
            while (end < len(calls) and calls[end].parts.kind == "preact" and _is_identity(calls[end])
                   and calls[end].x is calls[end - 1].y):
                end += 1
            if end < len(calls) and calls[end].x is not calls[end - 1].y:
                end_name = f"after {calls[end - 1].name}"
            else:
                end_name = calls[end].name if end < len(calls) else "output"
            x_end = calls[end - 1].y
            direct = run.grad_of(x_end)
            branches = [calls[i].f for i in range(l, end)]
            residual = vjp(branches, [direct] * len(branches), call.x, guard=guard)
            grad_in = run.grad_of(call.x)
            term = PreactTerm(name=call.name, end=end_name,
                              direct_term=as_numpy(direct) if keep_tensors else None,
                              residual_term=as_numpy(residual) if keep_tensors else None,
                              grad_in=as_numpy(grad_in) if keep_tensors else None,
                              error=_relative_error(direct + residual, grad_in), blocks=end - l)
            term.norms = {"direct": flat_norm(direct), "residual": flat_norm(residual),
                          "grad_in": flat_norm(grad_in)}
            out.append(term)
    return out
