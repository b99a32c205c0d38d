"""Gradient norms through depth: per weight tensor and per block of the residual stream."""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module
from ..ops.loss import cross_entropy
from ._graph import flat_norm
from .stream import TracedRun, buffers_kept, param_grads_kept, records_from_run


def _weight_names(model) -> list:
    """Names of the conv (4-D) and linear (2-D) weights, in definition (= forward) order."""
    return [name for name, p in model.named_parameters() if name.endswith("weight") and p.data.ndim in (2, 4)]


def _conv_names(model) -> list:
    return [name for name, p in model.named_parameters() if p.data.ndim == 4]


def _ratio_summary(first: str, last: str, n_first: float, n_last: float) -> dict:
    ratio = n_first / n_last if n_last > 0 else float("inf")
    return {"first": first, "last": last, "first_norm": n_first, "last_norm": n_last, "ratio": ratio,
            "log10_ratio": float(np.log10(ratio)) if 0 < ratio < float("inf") else float("nan")}


def gradient_norms(model, x, target, loss=None) -> list:
    """``||dL/dW||`` of every conv/linear weight and ``||dL/dx||`` along the residual stream.

    One traced forward and backward (the model's ``.grad`` and BN statistics are left as
    they were).

    Args:
        model: a network of blocks.
        x, target, loss: batch and loss (mean cross-entropy by default).

    Returns:
        A list of dicts with ``name``, ``kind`` (``'param'`` or ``'activation'``),
        ``depth`` (position: conv/linear weights counted in order; activations: block
        ``i``'s input is depth ``i``, the last block's output depth ``n``) and ``norm``.
    """
    with TracedRun(model, x, target, loss) as run:
        return _norm_rows(model, run)


def _norm_rows(model, run) -> list:
    rows = []
    for depth, name in enumerate(_weight_names(model)):
        g = run.param_grads.get(name)
        rows.append({"name": name, "kind": "param", "depth": depth,
                     "norm": flat_norm(g) if g is not None else 0.0})
    for i, c in enumerate(run.calls):
        rows.append({"name": c.name, "kind": "activation", "depth": i, "norm": flat_norm(run.grad_of(c.x))})
    last = run.calls[-1]
    rows.append({"name": f"{last.name}.out", "kind": "activation", "depth": len(run.calls),
                 "norm": flat_norm(run.grad_of(last.y))})
    return rows


def conv_gradient_ratio(model, x, target, loss=None, first: str | None = None, last: str | None = None) -> dict:
    """``||dL/dW_first|| / ||dL/dW_last||`` for the first and last conv weights.

    The first conv is the stem (``conv1.weight``), the last the final conv weight in
    definition order (the last block's second conv). One plain forward and backward,
    without tracing; the model's ``.grad`` and BN running statistics are put back.

    Args:
        model: any module with 4-D conv weights.
        x, target, loss: batch and loss (mean cross-entropy by default).
        first, last: override the parameter names.

    Returns:
        ``{'first': name, 'last': name, 'first_norm', 'last_norm', 'ratio', 'log10_ratio'}``.
    """
    convs = _conv_names(model)
    if not convs:
        raise ValueError(f"conv_gradient_ratio: {type(model).__name__} has no conv weights")
    first = first or convs[0]
    last = last or convs[-1]
    params = dict(model.named_parameters())
    for name in (first, last):
        if name not in params:
            raise ValueError(f"conv_gradient_ratio: no parameter named {name!r}")
    loss = cross_entropy if loss is None else loss
    data = x.data if isinstance(x, Tensor) else np.asarray(x)
    if target is not None and not isinstance(target, Tensor):
        target = Tensor(get_array_module(data).asarray(target))
    with buffers_kept(model), param_grads_kept(model):
        value = loss(model(Tensor(data)), target)
        value.backward()
        g_first, g_last = params[first].grad, params[last].grad
    n_first = flat_norm(g_first) if g_first is not None else 0.0
    n_last = flat_norm(g_last) if g_last is not None else 0.0
    return {**_ratio_summary(first, last, n_first, n_last), "loss": float(value.item())}


def gradient_profile(model, x, target, loss=None) -> dict:
    """Everything ``minires gradflow`` reports for one model and batch, from one traced run.

    Returns:
        ``{'gradnorms': rows as in gradient_norms, 'blocks': BlockRecord list (norms only),
        'conv_ratio': dict as in conv_gradient_ratio, 'loss': float}``.
    """
    with TracedRun(model, x, target, loss) as run:
        rows = _norm_rows(model, run)
        blocks = records_from_run(run, keep_tensors=False)
        convs = _conv_names(model)
        conv = _ratio_summary(convs[0], convs[-1], flat_norm(run.param_grads[convs[0]]),
                              flat_norm(run.param_grads[convs[-1]]))
        loss_value = run.loss
    return {"gradnorms": rows, "blocks": blocks, "conv_ratio": conv, "loss": loss_value}
