"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

The update is ``torch.optim.SGD``'s, step for step. For a parameter ``p`` with gradient
``g`` (``g = -g`` with ``maximize``)::

    g = g + weight_decay * p
    buf = g                                             (first step)
    buf = momentum * buf + (1 - dampening) * g          (later steps)
    g = g + momentum * buf   if nesterov   else   g = buf   (when momentum != 0)
    p = p - lr * g

All of it lives in :func:`sgd_update_`, one parameter at a time, in place. On the GPU
(CuPy parameters) :meth:`SGD.step` instead updates each parameter group with one fused
multi-tensor kernel launch, :func:`minires.kernels.optim.sgd_multi_tensor`, which does the
same arithmetic in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .. import backend
from ..autograd import Tensor
from ..kernels.optim import sgd_multi_tensor
from ..nn.parameter import zero_grads_

_REQUIRED = object()


def sgd_update_(param, grad, momentum_buffer, *, lr: float, momentum: float, dampening: float,
                weight_decay: float, nesterov: bool, maximize: bool = False):
    """Apply one SGD step to the array ``param`` in place.

    Args:
        param: the parameter array (NumPy or CuPy), updated in place.
        grad: its gradient array (not modified).
        momentum_buffer: the momentum buffer array (updated in place) or ``None`` before
            the first step.
        lr, momentum, dampening, weight_decay, nesterov, maximize: as in :class:`SGD`.

    Returns:
        The momentum buffer (a new array on the first step, ``None`` without momentum).
    """
    # the effective gradient d_p; ``fresh`` says it is a temporary we may overwrite
    if weight_decay != 0:
        d_p = param * weight_decay
        if maximize:
            d_p -= grad
        else:
            d_p += grad
        fresh = True
    else:
        d_p = -grad if maximize else grad
        fresh = maximize
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = d_p.copy()
        else:
            momentum_buffer *= momentum
            if dampening == 0:
                momentum_buffer += d_p
            else:
                momentum_buffer += (1 - dampening) * d_p
        if nesterov:
            step = momentum_buffer * momentum
            step += d_p
            d_p, fresh = step, True
        else:
            d_p, fresh = momentum_buffer, False
    else:
        momentum_buffer = None
    if fresh:  # p -= lr * d_p without another temporary (same rounding)
        d_p *= lr
        param -= d_p
    else:
        param -= lr * d_p
    return momentum_buffer


def _fusable(p) -> bool:
    """True for a CuPy parameter the fused kernel can update (contiguous float32/64, same-dtype grad)."""
    data, grad = p.data, p.grad
    return (backend.is_cupy_array(data) and backend.is_cupy_array(grad) and data.flags.c_contiguous
            and data.dtype.kind == "f" and data.itemsize in (4, 8) and grad.dtype == data.dtype
            and grad.shape == data.shape)


def _check_hyper(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"SGD: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid {name} value: {value} (expected a finite number >= 0)")
    return value


class SGD:
    """Stochastic gradient descent (``torch.optim.SGD``), optionally with momentum.

    Args:
        params: an iterable of Parameters, or of dicts (parameter groups) each with a
            ``'params'`` entry and optional per-group options overriding the defaults.
        lr: learning rate (>= 0).
        momentum: momentum factor (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0). Use
            :func:`param_groups_weight_decay` to exempt BatchNorm parameters and biases.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        dampening: dampening of the momentum (>= 0).
        maximize: ascend instead of descend.

    Attributes:
        param_groups: list of dicts (``'params'`` and the options); schedules change
            ``group['lr']``.
        state: dict parameter -> ``{'momentum_buffer': array}``.

    Example:
        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
        >>> opt.zero_grad(); loss.backward(); opt.step()
    """

    def __init__(self, params, lr: float = _REQUIRED, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, dampening: float = 0.0, maximize: bool = False):
        if lr is _REQUIRED:
            raise TypeError("SGD: the learning rate lr is required")
        self.defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                             nesterov=nesterov, maximize=maximize)
        self._validate(self.defaults, "defaults")
        self.state: dict = {}
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor) or isinstance(params, dict):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or "
                            f"dicts, but got {type(params).__name__}")
        if not isinstance(params, Iterable):
            raise TypeError(f"params should be an iterable of Parameters or dicts, got {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @staticmethod
    def _validate(options: dict, where: str) -> None:
        for name in ("lr", "momentum", "dampening", "weight_decay"):
            options[name] = _check_hyper(name if where == "defaults" else f"{name} ({where})", options[name])
        options["nesterov"] = bool(options["nesterov"])
        options["maximize"] = bool(options["maximize"])
        if options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening, got "
                             f"momentum={options['momentum']}, dampening={options['dampening']}")

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own options (missing options take the defaults).

        Raises:
            TypeError: the group is not a dict or holds something that is not a Tensor.
            ValueError: a parameter already belongs to another group, is not a leaf, or an
                option is invalid.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param group must have a 'params' entry")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
            if p.dtype.kind != "f":
                raise TypeError(f"optimizer can only optimize floating-point Tensors, got dtype {p.dtype}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter group contains the same parameter more than once")
        unknown = set(param_group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"unknown options in param group: {sorted(unknown)}; "
                             f"expected some of {sorted(self.defaults)}")
        # the defaults, overridden by the group's own options (and its initial_lr, if any)
        group = {"params": params, **self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self._validate(group, f"param group {len(self.param_groups)}")
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if existing & {id(p) for p in params}:
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of all parameters (to ``None`` by default, as PyTorch >= 2.0)."""
        zero_grads_((p for group in self.param_groups for p in group["params"]), set_to_none)

    def step(self, closure=None):
        """Update every parameter that has a gradient; parameters without one are skipped.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss
                (called with grad enabled before the update).

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            loss = closure()
        for group in self.param_groups:
            options = {key: group[key] for key in self.defaults}  # the keyword options of sgd_update_
            fused = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.setdefault(p, {})
                if _fusable(p):
                    fused.append(p)
                    continue
                buf = sgd_update_(p.data, p.grad, state.get("momentum_buffer"), **options)
                state["momentum_buffer"] = buf
            if fused:
                # CuPy parameters: one fused multi-tensor kernel launch for the whole group
                bufs = sgd_multi_tensor([p.data for p in fused], [p.grad for p in fused],
                                        [self.state[p].get("momentum_buffer") for p in fused], **options)
                for p, buf in zip(fused, bufs):
                    self.state[p]["momentum_buffer"] = buf
        return loss

    # --- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict:
        """The optimiser's state in PyTorch's layout, with arrays.

        Returns:
            ``{'state': {index: {'momentum_buffer': array or None}}, 'param_groups':
            [{options..., 'params': [index, ...]}]}`` where parameters are numbered in
            group order. The arrays are the live buffers; copy them to snapshot.
        """
        index_of, groups = {}, []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index_of.setdefault(id(p), len(index_of)) for p in group["params"]]
            groups.append(packed)
        state = {index_of[id(p)]: dict(self.state[p])
                 for group in self.param_groups for p in group["params"] if p in self.state}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore options and momentum buffers saved by :meth:`state_dict`.

        Buffers are copied onto each parameter's device and dtype.

        Raises:
            ValueError: the group count, group sizes or a buffer's shape do not match.
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("expected a dict with 'state' and 'param_groups' entries (from SGD.state_dict())")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"the optimizer has {len(self.param_groups)}")
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"loaded state dict contains a parameter group {i} with {len(saved['params'])} "
                                 f"parameters, the optimizer's group has {len(group['params'])}")
        id_to_param = {int(index): p for saved, group in zip(saved_groups, self.param_groups)
                       for index, p in zip(saved["params"], group["params"])}
        new_state = {}
        for index, entry in state_dict["state"].items():
            index = int(index)
            if index not in id_to_param:
                raise ValueError(f"loaded state dict has state for parameter {index}, "
                                 "which is not in any parameter group")
            p = id_to_param[index]
            entry = dict(entry)
            buf = entry.get("momentum_buffer")
            if buf is not None:
                buf = buf.data if isinstance(buf, Tensor) else buf
                buf = backend.as_numpy(buf) if p.device == "cpu" else backend.to_device(buf, p.device)
                if tuple(buf.shape) != p.shape:
                    raise ValueError(f"momentum buffer of parameter {index} has shape {tuple(buf.shape)}, "
                                     f"the parameter has shape {p.shape}")
                entry["momentum_buffer"] = buf.astype(p.dtype, copy=True)
            new_state[p] = entry
        for saved, group in zip(saved_groups, self.param_groups):
            options = {k: v for k, v in saved.items() if k != "params"}
            merged = dict(group, **options)
            self._validate(merged, "loaded state dict")
            group.update({k: merged[k] for k in options})
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def param_groups_weight_decay(model, weight_decay: float, skip=()) -> list[dict]:
    """Split a model's trainable parameters into a decayed and a non-decayed group.

    Conv and linear weights (``ndim > 1``) get ``weight_decay``; BatchNorm weights and
    biases and every bias (``ndim <= 1``), and names listed in ``skip``, get 0.

    Args:
        model: a ``Module``.
        weight_decay: the decay of the first group (>= 0).
        skip: parameter names to exempt as well.

    Returns:
        A list of one or two groups for :class:`SGD` (empty groups are left out).

    Example:
        >>> opt = SGD(param_groups_weight_decay(model, 5e-4), lr=0.1, momentum=0.9)
    """
    weight_decay = _check_hyper("weight_decay", weight_decay)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": params, "weight_decay": decay_of_group}
            for params, decay_of_group in ((decay, weight_decay), (no_decay, 0.0)) if params]
