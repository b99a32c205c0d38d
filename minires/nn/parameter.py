"""``Parameter``: a tensor that a ``Module`` registers as one of its learnable weights."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Tensor


class Parameter(Tensor):
    """A :class:`~minires.Tensor` that requires grad and is registered by ``Module``.

    Assigning a ``Parameter`` to a module attribute (``self.weight = Parameter(...)``)
    adds it to ``module.parameters()`` and ``module.state_dict()``. The parameter wraps
    the given array without copying, as ``torch.nn.Parameter`` shares storage.

    Args:
        data: a Tensor or an array (NumPy or CuPy); ``None`` gives an empty float32 array.
        requires_grad: whether the optimiser trains it (floating dtypes only).

    Example:
        >>> w = Parameter(mr.zeros(3, 4))
        >>> w.requires_grad
        True
    """

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = np.empty((0,), dtype=np.float32)
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        result = Parameter(self.data.copy(), self.requires_grad)
        if self.grad is not None:
            result.grad = self.grad.copy()
        memo[id(self)] = result
        return result

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (self.data, self.requires_grad))


def _rebuild_parameter(data, requires_grad):
    return Parameter(data, requires_grad)


def zero_grads_(params, set_to_none: bool = True) -> None:
    """Clear the gradients of ``params`` (``None``, or zeros with ``set_to_none=False``)."""
    for p in params:
        if p.grad is not None:
            p.grad = None if set_to_none else backend.get_array_module(p.grad).zeros_like(p.grad)


def make_parameter(shape, dtype, device) -> Parameter:
    """An uninitialised (zero) float parameter of ``shape`` on ``device``."""
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(f"parameters must have a floating dtype, got {dtype}")
    device = backend.parse_device(device)
    array = backend.xp_for(device).zeros(shape, dtype=dtype) if device == "cpu" else \
        backend.to_device(np.zeros(shape, dtype=dtype), device)
    return Parameter(array)
