"""Hook registration and handles, and the machinery behind ``Module.register_full_backward_hook``.

A full backward hook must see the gradients of *all* of a module's inputs and outputs at
once, and may replace the input gradients before they flow further up. The autograd
engine works with single-output Functions, so (like PyTorch's ``BackwardHookFunction``)
the module's tensors are routed through identity nodes:

- the inputs that require grad are *gathered* into one node (``_Gather``: the identity
  for one tensor, a flat concatenation for several) and *scattered* back out
  (``_Scatter``: views of the pieces). Every use inside the module goes through a
  scattered piece, so the gather node runs its backward only after the gradients of all
  pieces arrived: that is where ``grad_input`` is complete and the hooks run.
- the outputs go through the same pair, so ``grad_output`` is complete in one place too,
  before any gradient enters the module.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from ..autograd.grad_mode import is_grad_enabled
from ..autograd.hooks import RemovableHandle
from ..backend import get_array_module

class ModuleHooks:
    """The ``register_*_hook`` methods of :class:`~minires.nn.Module` (which runs the hooks in ``__call__``)."""

    @staticmethod
    def _add_hook(hooks: OrderedDict, hook, prepend: bool) -> RemovableHandle:
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def register_forward_pre_hook(self, hook, *, prepend: bool = False) -> RemovableHandle:
        """Run ``hook(module, args)`` before ``forward``; a non-None return replaces ``args``.

        Returns:
            A handle whose ``remove()`` unregisters the hook.
        """
        return self._add_hook(self._forward_pre_hooks, hook, prepend)

    def register_forward_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False) -> RemovableHandle:
        """Run ``hook(module, args, output)`` after ``forward``; a non-None return replaces the output.

        With ``with_kwargs=True`` the hook is called as ``hook(module, args, kwargs, output)``.

        Returns:
            A handle whose ``remove()`` unregisters the hook.
        """
        handle = self._add_hook(self._forward_hooks, hook, prepend)
        if with_kwargs:
            self._forward_hooks_with_kwargs.add(handle.id)
        return handle

    def register_full_backward_hook(self, hook, prepend: bool = False) -> RemovableHandle:
        """Run ``hook(module, grad_input, grad_output)`` once the module's input gradients are known.

        ``grad_input`` has one entry per positional argument of ``forward`` and
        ``grad_output`` one per output, as in PyTorch: the gradient Tensor; zeros for a
        tensor argument that got no gradient (unused, or not requiring grad); ``None`` for
        a non-tensor argument or an output that got no gradient. When no input requires
        grad the hook runs as soon as ``grad_output`` is known, with ``grad_input`` all
        ``None``. A non-None return (a tuple like ``grad_input``) replaces the input
        gradients that flow on.

        Returns:
            A handle whose ``remove()`` unregisters the hook.
        """
        return self._add_hook(self._backward_hooks, hook, prepend)

    def register_full_backward_pre_hook(self, hook, prepend: bool = False) -> RemovableHandle:
        """Run ``hook(module, grad_output)`` before the module's backward; may return a new grad_output.

        Returns:
            A handle whose ``remove()`` unregisters the hook.
        """
        return self._add_hook(self._backward_pre_hooks, hook, prepend)


# --- gather / scatter identity nodes ----------------------------------------------------

class _Gather(Function):
    def forward(self, *arrays, gate, role):
        self.gate, self.role = gate, role
        self.shapes = [a.shape for a in arrays]
        if len(arrays) == 1:
            return arrays[0]
        xp = get_array_module(*arrays)
        return xp.concatenate([a.reshape(-1) for a in arrays])

    def backward(self, grad):
        # identity: the gradient of each piece is its slice of the flat gradient
        if len(self.shapes) == 1:
            pieces = [grad]
        else:
            bounds = np.cumsum([math.prod(shape) for shape in self.shapes])[:-1]
            pieces = [p.reshape(s) for p, s in zip(get_array_module(grad).split(grad, bounds), self.shapes)]
        return tuple(self.gate.on_gradients(self.role, pieces))

    jvp = Function.linear_jvp


class _Scatter(Function):
    def forward(self, flat, *, gate, role, index, offset, shape, single):
        self.gate, self.role, self.index = gate, role, index
        self.offset, self.shape, self.single = offset, shape, single
        self.flat_shape, self.dtype = flat.shape, flat.dtype
        if single:
            return flat
        return flat[offset:offset + math.prod(shape)].reshape(shape)

    def backward(self, grad):
        # identity: put the piece's gradient at its place in the flat gradient
        self.gate.received[self.role].add(self.index)
        if self.single:
            return grad
        xp = get_array_module(grad)
        out = xp.zeros(self.flat_shape, dtype=self.dtype)
        out[self.offset:self.offset + grad.size] = grad.reshape(-1)
        return out

    jvp = Function.linear_jvp


def _route(values, positions, gate, role) -> list:
    """``values`` with the tensors at ``positions`` (those requiring grad) passed through one
    gather/scatter pair."""
    flat = _Gather.apply(*(values[i] for i in positions), gate=gate, role=role)
    single = len(positions) == 1
    routed, offset = list(values), 0
    for index, position in enumerate(positions):
        t = values[position]
        routed[position] = _Scatter.apply(flat, gate=gate, role=role, index=index, offset=offset,
                                          shape=t.shape, single=single)
        offset += t.numel()
    return routed


class BackwardHookGate:
    """Collects a module's gradients in one forward call and runs its full backward hooks.

    Args:
        module: the module whose hooks run.
        hooks: the module's ordered ``full backward hooks``.
        pre_hooks: the module's ordered ``full backward pre-hooks``.
    """

    def __init__(self, module, hooks, pre_hooks):
        self.module = module
        self.hooks = list(hooks.values())
        self.pre_hooks = list(pre_hooks.values())
        self.received = {"input": set(), "output": set()}
        self.n_inputs = 0
        self.input_positions: list[int] = []
        self.n_outputs = 0
        self.output_positions: list[int] = []
        self.grad_output = None
        self.inputs_routed = False
        self.input_tensors: dict = {}

    # forward side
    def setup_inputs(self, args: tuple) -> tuple:
        """Route the tensor arguments that require grad; return the new argument tuple."""
        self.n_inputs = len(args)
        if not is_grad_enabled():
            return args
        # tensor arguments whose gradient is reported as zeros when none flows (as PyTorch)
        self.input_tensors = {i: (a.shape, a.dtype, a.device) for i, a in enumerate(args)
                              if isinstance(a, Tensor)}
        self.input_positions = [i for i, a in enumerate(args)
                                if isinstance(a, Tensor) and a.requires_grad]
        if not self.input_positions:
            return args
        self.inputs_routed = True
        return tuple(_route(args, self.input_positions, self, "input"))

    def setup_outputs(self, result):
        """Route the module's output tensor(s) that require grad; return the new result."""
        if not is_grad_enabled():
            return result
        is_tuple = isinstance(result, (tuple, list))
        outputs = tuple(result) if is_tuple else (result,)
        self.n_outputs = len(outputs)
        self.output_positions = [i for i, o in enumerate(outputs)
                                 if isinstance(o, Tensor) and o.requires_grad]
        if not self.output_positions:
            return result
        outputs = _route(outputs, self.output_positions, self, "output")
        if not is_tuple:
            return outputs[0]
        return type(result)(outputs)

    # backward side
    def _pack(self, role, pieces):
        """Full-length tuple (one entry per argument/output) of Tensors or None.

        As in PyTorch: an output that got no gradient is ``None``; a tensor argument that
        got none (unused, or not requiring grad) is zeros; a non-tensor argument is ``None``.
        """
        positions = self.input_positions if role == "input" else self.output_positions
        total = self.n_inputs if role == "input" else self.n_outputs
        packed = [None] * total
        if role == "input":
            for pos, (shape, dtype, device) in self.input_tensors.items():
                packed[pos] = Tensor(backend.xp_for(device).zeros(shape, dtype=dtype))
        for k, (pos, g) in enumerate(zip(positions, pieces)):
            if k in self.received[role] and g is not None:
                packed[pos] = Tensor(g)
        return tuple(packed)

    def on_gradients(self, role, pieces):
        """Called by ``_Gather.backward`` with every piece's gradient; runs the hooks."""
        if role == "output":
            grad_output = self._pack("output", pieces)
            for hook in self.pre_hooks:
                replaced = hook(self.module, grad_output)
                if replaced is not None:
                    grad_output = self._check_replacement("backward pre-hook", grad_output, replaced)
            self.grad_output = grad_output
            if not self.inputs_routed:  # nothing upstream needs grads: run the hooks now
                self._run_hooks(tuple([None] * self.n_inputs))
            return self._unpack("output", grad_output)
        grad_input = self._pack("input", pieces)
        grad_input = self._run_hooks(grad_input)
        return self._unpack("input", grad_input)

    def _run_hooks(self, grad_input):
        grad_output = self.grad_output if self.grad_output is not None else tuple([None] * self.n_outputs)
        for hook in self.hooks:
            replaced = hook(self.module, grad_input, grad_output)
            if replaced is not None:
                grad_input = self._check_replacement("full backward hook", grad_input, replaced)
        return grad_input

    def _check_replacement(self, what, old, new):
        if isinstance(new, Tensor) or not isinstance(new, (tuple, list)):
            new = (new,)
        new = tuple(new)
        if len(new) != len(old):
            raise RuntimeError(f"{type(self.module).__name__} {what} returned {len(new)} gradients, "
                               f"expected {len(old)}")
        for i, (o, n) in enumerate(zip(old, new)):
            if n is None:
                continue
            if not isinstance(n, Tensor):
                raise TypeError(f"{what} must return Tensors or None, got {type(n).__name__} at {i}")
            if o is not None and n.shape != o.shape:
                raise RuntimeError(f"{what} returned a gradient of shape {n.shape} at position {i}, "
                                   f"expected {o.shape}")
        return new

    def _unpack(self, role, grads):
        positions = self.input_positions if role == "input" else self.output_positions
        out = []
        for k, pos in enumerate(positions):
            g = grads[pos]
            if g is None or k not in self.received[role]:
                out.append(None)  # nothing flowed there: keep it that way
            else:
                out.append(g.data if isinstance(g, Tensor) else g)
        return out
