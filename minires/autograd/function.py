"""``Function``: one differentiable operation, forward and backward side by side.

A subclass implements ``forward(self, *arrays, **options) -> array`` on raw NumPy/CuPy
arrays, keeping on ``self`` only what ``backward`` needs, and
``backward(self, grad_output) -> grad or tuple of grads`` with one entry per positional
input (``None`` where an input needs no gradient), and, for forward mode, ``jvp``
(``jvp = Function.linear_jvp`` for an op linear in its inputs). ``Op.apply(*tensors,
**options)`` checks devices and dtypes, runs ``forward`` and, when grad mode is on and an
input requires grad, links the result into the graph. Every op goes through ``apply``.

:func:`record_ops` lets a thread watch its own ``apply`` calls (the analysis tools replay
them in forward mode with each op's ``jvp``); when nothing records, ``apply`` pays one
attribute lookup for it.
"""

from __future__ import annotations

import contextlib
import threading

from ..backend import get_array_module
from .grad_mode import builds_graph
from .tensor import Tensor


def check_float_tensor(op_name: str, value, what: str | None = "input", allow_none: bool = False) -> None:
    """Check that one argument of an op is a floating-point ``Tensor`` (or ``None`` where allowed).

    Args:
        op_name: the op, first word of the message (``'conv2d'``).
        value: the argument.
        what: its name in the message (``'weight'``); ``None`` for a one-argument op.
        allow_none: accept ``None`` (an optional bias).

    Raises:
        TypeError: ``value`` is not a Tensor (nor an allowed ``None``), or not floating-point.
    """
    if value is None and allow_none:
        return
    if not isinstance(value, Tensor):
        name = f"a Tensor or None as {what}" if allow_none else "a Tensor" + (f" {what}" if what else "")
        raise TypeError(f"{op_name}: expected {name}, got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise TypeError(f"{op_name}: expected a floating-point {what or 'tensor'}, got dtype {value.dtype}")


def check_same_device_and_dtype(op_name: str, inputs) -> None:
    """Check that the tensor inputs of one op share a device and a floating dtype.

    Raises:
        ValueError: two inputs live on different devices (both are named).
        TypeError: two floating inputs have different dtypes (no silent casting).
    """
    device = None
    float_dtype = None
    for t in inputs:
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{op_name}: expected Tensor inputs, got {type(t).__name__}")
        if device is None:
            device = t.device
        elif t.device != device:
            raise ValueError(
                f"{op_name}: expected all tensors on one device, got {device} and {t.device}; "
                "move them with .to(device)"
            )
        if t.data.dtype.kind == "f":
            if float_dtype is None:
                float_dtype = t.data.dtype
            elif t.data.dtype != float_dtype:
                raise TypeError(
                    f"{op_name}: expected all floating tensors to have one dtype, got "
                    f"{float_dtype} and {t.data.dtype}; convert one with .to(dtype) or .float()/.double()"
                )


def sum_tangents(shape, *parts):
    """Forward mode: the sum of the tangent contributions that are not ``None``, broadcast to ``shape``."""
    present = [p for p in parts if p is not None]
    xp = get_array_module(present[0])
    total = xp.broadcast_to(present[0], shape)
    for p in present[1:]:
        total = total + p
    return total


class _Observers(threading.local):
    """Per thread: the callables that receive each ``(op class, inputs, options, output)``."""

    observers: tuple = ()


_recording = _Observers()


@contextlib.contextmanager
def record_ops(observer=None):
    """Record the ``Function.apply`` calls the calling thread makes inside the block.

    Other threads' ops are not recorded. Recorders nest: an inner block's ops are recorded
    by the outer one too.

    Args:
        observer: optional callable, called with each entry as soon as its op has run
            (before the output is used further).

    Yields:
        A list that receives one ``(op class, inputs, options, output)`` tuple per op, in
        call order: ``inputs`` is the tuple of positional inputs (``Tensor`` or ``None``),
        ``options`` the keyword options, ``output`` the resulting ``Tensor``.

    Example:
        >>> with record_ops() as ops:
        ...     y = (x * 2).sum()
        >>> [cls.__name__ for cls, *_ in ops]
        ['Mul', 'Sum']
    """
    entries = []
    watchers = (entries.append,) if observer is None else (entries.append, observer)
    previous = _recording.observers
    _recording.observers = previous + watchers
    try:
        yield entries
    finally:
        _recording.observers = previous


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

    def jvp(self, tangents, inputs, output, **options):
        """Forward mode: the output's tangent ``sum_i (d output / d input_i) tangents[i]``.

        Called on a fresh instance. ``tangents`` holds one array, or ``None`` for a zero
        tangent, per positional input (at least one is an array); ``inputs`` are the input
        arrays (``None`` where the op got ``None``), ``output`` the output array and
        ``options`` the keyword options of the call. Returns an array (broadcastable to
        ``output``), or ``None`` where the output has no tangent (a cast to integers).
        """
        raise NotImplementedError(
            f"forward-mode JVP: no rule for op {type(self).__name__}; give the class a jvp method "
            "(jvp = Function.linear_jvp if it is linear in its inputs)")

    def linear_jvp(self, tangents, inputs, output, **options):
        """The ``jvp`` of an op linear in its inputs jointly: its own ``forward`` on the tangents."""
        arrays = [None if x is None else (get_array_module(x).zeros_like(x) if t is None else t)
                  for x, t in zip(inputs, tangents)]
        return self.forward(*arrays, **options)

    @classmethod
    def apply(cls, *inputs, **options):
        """Run the op on ``Tensor`` (or ``None``) inputs and return a ``Tensor``."""
        check_same_device_and_dtype(cls.__name__, inputs)
        fn = cls()
        arrays = [t.data if t is not None else None for t in inputs]
        record = builds_graph(inputs)
        if record:
            fn.needs_input_grad = tuple(t is not None and t.requires_grad for t in inputs)
        out = fn.forward(*arrays, **options)
        result = Tensor._from_op(out)
        if record:
            fn.parents = inputs
            result.requires_grad = True
            result._ctx = fn
        observers = _recording.observers
        if observers:
            for observe in observers:
                observe((cls, inputs, options, result))
        return result

    def release(self) -> None:
        """Drop everything forward saved and the links to the inputs (after backward)."""
        self.__dict__.clear()
        self._released = True

    @property
    def released(self) -> bool:
        return self.__dict__.get("_released", False)
