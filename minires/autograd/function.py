"""``Function``: one differentiable operation, forward and backward side by side.

A subclass implements ``forward(self, *arrays, **options) -> array`` on raw NumPy/CuPy
arrays, keeping on ``self`` only what ``backward`` needs, and
``backward(self, grad_output) -> grad or tuple of grads`` with one entry per positional
input (``None`` where an input needs no gradient). ``Op.apply(*tensors, **options)``
checks devices and dtypes, runs ``forward`` and, when grad mode is on and an input
requires grad, links the result into the graph.
"""

from __future__ import annotations

from .grad_mode import is_grad_enabled


class Function:
    """Base class of every differentiable op.

    Attributes:
        parents: the positional inputs (``Tensor`` or ``None``), kept until backward ran.
        needs_input_grad: one bool per positional input.
    """

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_output):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **options):
        """Run the op on ``Tensor`` (or ``None``) inputs and return a ``Tensor``."""
        from .tensor import Tensor, check_same_device_and_dtype  # noqa: PLC0415

        device = check_same_device_and_dtype(cls.__name__, inputs)
        fn = cls()
        arrays = [t.data if t is not None else None for t in inputs]
        record = is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
        if record:
            fn.needs_input_grad = tuple(t is not None and t.requires_grad for t in inputs)
        out = fn.forward(*arrays, **options)
        result = Tensor._from_op(out, device)
        if record:
            fn.parents = inputs
            result.requires_grad = True
            result._ctx = fn
        return result

    def release(self) -> None:
        """Drop everything forward saved and the links to the inputs (after backward)."""
        self.__dict__.clear()
        self._released = True

    @property
    def released(self) -> bool:
        return self.__dict__.get("_released", False)
