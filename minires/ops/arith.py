"""Broadcasting arithmetic of two tensors: add, sub, mul, div, floor_divide, remainder, matmul.

Gradients of broadcast inputs are summed back over the broadcast axes
(:func:`unbroadcast`). The ops of one tensor (neg, abs, exp, log, sqrt, pow, rpow) live
in :mod:`minires.ops.unary` and are importable from here too.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..autograd.function import sum_tangents
from ..autograd.dtypes import DEFAULT_FLOAT, result_type
from ..backend import get_array_module
from .shape import cast
from .unary import (Abs, Exp, Log, Neg, Pow, RPow, Sqrt, abs, exp, log, neg, pow, rpow,  # noqa: F401, A004
                    rpow_derivative, sqrt)


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched to reach ``shape``."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


class Add(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, grad):
        # d(a+b)/da = 1, d(a+b)/db = 1
        return unbroadcast(grad, self.a_shape), unbroadcast(grad, self.b_shape)

    def jvp(self, tangents, inputs, output):
        # d(a+b) = da + db
        return sum_tangents(output.shape, *tangents)


class Sub(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, grad):
        # d(a-b)/da = 1, d(a-b)/db = -1
        return unbroadcast(grad, self.a_shape), unbroadcast(-grad, self.b_shape)

    def jvp(self, tangents, inputs, output):
        # d(a-b) = da - db
        ta, tb = tangents
        return sum_tangents(output.shape, ta, None if tb is None else -tb)


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        # d(ab)/da = b, d(ab)/db = a
        ga = unbroadcast(grad * self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(grad * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb

    def jvp(self, tangents, inputs, output):
        # d(ab) = da b + a db
        (ta, tb), (a, b) = tangents, inputs
        return sum_tangents(output.shape, None if ta is None else ta * b, None if tb is None else a * tb)


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        ga = unbroadcast(grad / self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(-grad * self.a / (self.b * self.b), self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb

    def jvp(self, tangents, inputs, output):
        # d(a/b) = da / b - a db / b^2
        (ta, tb), (a, b) = tangents, inputs
        return sum_tangents(output.shape, None if ta is None else ta / b,
                            None if tb is None else -a * tb / (b * b))


class FloorDivide(Function):
    def forward(self, a, b):
        return floor_divide_arrays(a, b)

    def backward(self, grad):
        # floor(a/b) is piecewise constant; PyTorch defines no derivative and refuses backward, so do we
        raise RuntimeError("floor_divide: the derivative of floor_divide is not implemented (as in PyTorch); "
                           "floor-divide detached tensors (.detach()) or under mr.no_grad()")


class Remainder(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return remainder_arrays(a, b)

    def backward(self, grad):
        # a mod b = a - b floor(a/b): d/da = 1, d/db = -floor(a/b)
        ga = unbroadcast(grad, self.a.shape) if self.needs_input_grad[0] else None
        gb = (unbroadcast(-grad * floor_divide_arrays(self.a, self.b), self.b.shape)
              if self.needs_input_grad[1] else None)
        return ga, gb

    def jvp(self, tangents, inputs, output):
        # d(a mod b) = da - floor(a/b) db
        (ta, tb), (a, b) = tangents, inputs
        return sum_tangents(output.shape, ta, None if tb is None else -tb * floor_divide_arrays(a, b))


def floor_divide_arrays(a, b):
    """``floor(a / b)`` of two arrays of one dtype, computed as PyTorch's ``div_floor``.

    Integers: NumPy's floor division (``MIN // -1`` wraps, as in PyTorch); the caller has
    refused zero divisors. Floats: ``(a - fmod(a, b)) / b``, less 1 where the remainder's
    sign differs from ``b``'s, then rounded to the nearest integer (Python's float ``//``),
    with ``a / b`` where ``b == 0`` (inf or NaN) and a zero carrying the sign of ``a / b``.
    """
    xp = get_array_module(a)
    if a.dtype.kind in "biu":
        with np.errstate(over="ignore", divide="ignore"):
            return xp.floor_divide(a, b)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mod = xp.fmod(a, b)
        div = (a - mod) / b
        div = xp.where((mod != 0) & ((b < 0) != (mod < 0)), div - 1, div)
        floored = xp.floor(div)
        floored = xp.where(div - floored > 0.5, floored + 1, floored)
        quotient = a / b
        floored = xp.where(div == 0, xp.copysign(xp.zeros((), div.dtype), quotient), floored)
        return xp.where(b == 0, quotient, floored)


def remainder_arrays(a, b):
    """``a - b * floor(a / b)`` of two arrays of one dtype, with the sign of ``b`` (PyTorch's ``remainder``).

    Floats: ``fmod(a, b)``, plus ``b`` where it is nonzero and its sign differs from ``b``'s;
    so a zero remainder keeps ``a``'s sign and ``b == 0`` gives NaN, as in PyTorch.
    """
    xp = get_array_module(a)
    if a.dtype.kind in "biu":
        with np.errstate(divide="ignore"):
            return xp.remainder(a, b)
    with np.errstate(invalid="ignore"):
        mod = xp.fmod(a, b)
        return xp.where((mod != 0) & ((b < 0) != (mod < 0)), mod + b, mod)


class IntegerDivisionByZeroError(ZeroDivisionError, RuntimeError):
    """An integer ``floor_divide`` or ``remainder`` by zero (PyTorch raises ``RuntimeError`` here)."""


class Matmul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, grad):
        # C = AB: dA = G B^T, dB = A^T G (with 1-d operands promoted, batch dims summed)
        xp = get_array_module(grad)
        a, b = self.a, self.b
        if a.ndim == 1 and b.ndim == 1:  # inner product
            return (grad * b if self.needs_input_grad[0] else None,
                    grad * a if self.needs_input_grad[1] else None)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = grad
        if a.ndim == 1:
            g = xp.expand_dims(g, -2)
        if b.ndim == 1:
            g = xp.expand_dims(g, -1)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = g @ xp.swapaxes(b2, -1, -2)
            ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            gb = xp.swapaxes(a2, -1, -2) @ g
            gb = unbroadcast(gb, b2.shape).reshape(b.shape)
        return ga, gb

    def jvp(self, tangents, inputs, output):
        # d(ab) = da b + a db
        (ta, tb), (a, b) = tangents, inputs
        return sum_tangents(output.shape, None if ta is None else ta @ b, None if tb is None else a @ tb)


def _check_pair(name, a, b, broadcast=True):
    """Validate two operands and cast both to their :func:`result_type` (PyTorch's promotion).

    Two floating tensors of different dtypes that are both dimensioned or both 0-d are left
    as they are, for ``Function.apply`` to refuse (no silent casting between float dtypes).
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{name}: expected Tensors, got {type(a).__name__} and {type(b).__name__}")
    if broadcast:
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(f"{name}: shapes {a.shape} and {b.shape} cannot be broadcast together "
                             "(trailing sizes must match or be 1)") from None
    if a.dtype.kind == b.dtype.kind == "f" and a.dtype != b.dtype and (a.ndim == 0) == (b.ndim == 0):
        return a, b
    dtype = result_type(a, b)
    return cast(a, dtype), cast(b, dtype)


def add(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise ``a + b`` with broadcasting."""
    a, b = _check_pair("add", a, b)
    return Add.apply(a, b)


def sub(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise ``a - b`` with broadcasting.

    Raises:
        TypeError: an operand is bool (as in PyTorch; use ``~`` or ``^`` on bools).
    """
    if isinstance(a, Tensor) and isinstance(b, Tensor) and np.bool_ in (a.dtype, b.dtype):
        raise TypeError("sub: subtraction with a bool tensor or a bool number is not supported; "
                        "use ~ or ^ for bools, or convert with .to('int64')")
    a, b = _check_pair("sub", a, b)
    return Sub.apply(a, b)


def mul(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise ``a * b`` with broadcasting."""
    a, b = _check_pair("mul", a, b)
    return Mul.apply(a, b)


def div(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise true division ``a / b`` with broadcasting; integers and bools give float32."""
    a, b = _check_pair("div", a, b)
    if a.dtype.kind in "biu":
        a, b = cast(a, DEFAULT_FLOAT), cast(b, DEFAULT_FLOAT)
    return Div.apply(a, b)


def _check_division(name, a, b):
    """:func:`_check_pair`, then refuse what PyTorch refuses: bool operands, integer zero divisors."""
    a, b = _check_pair(name, a, b)
    if a.dtype == np.bool_ and b.dtype == np.bool_:
        raise TypeError(f"{name}: not supported for bool operands (PyTorch has no bool kernel either); "
                        "convert with .to('int64')")
    if b.dtype.kind in "iu" and bool((b.data == 0).any()):
        raise IntegerDivisionByZeroError(f"{name}: integer division by zero (the {b.dtype} divisor has a "
                                         "zero); use a floating dtype for inf/NaN results")
    return a, b


def floor_divide(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise ``floor(a / b)`` (``a // b``), rounding toward negative infinity, with broadcasting.

    PyTorch's ``torch.floor_divide`` (1.13 on): the dtype is :func:`result_type` of the pair
    (integers stay integers, an integer with a float gives float32); a float zero divisor
    gives ``±inf`` or NaN. Piecewise constant: as in PyTorch, the result is recorded but
    ``backward`` through it raises ``RuntimeError``.

    Raises:
        TypeError: both operands are bool, or an operand is not a Tensor.
        IntegerDivisionByZeroError: an integer divisor holds a zero (a ``ZeroDivisionError``
            and a ``RuntimeError``).
    """
    a, b = _check_division("floor_divide", a, b)
    return FloorDivide.apply(a, b)


def remainder(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise ``a - b * floor(a / b)`` (``a % b``), with the sign of ``b``, with broadcasting.

    PyTorch's ``torch.remainder``: dtypes as :func:`floor_divide`; a float zero divisor gives
    NaN. Gradients: ``d/da = 1``, ``d/db = -floor(a / b)``.

    Raises:
        TypeError: both operands are bool, or an operand is not a Tensor.
        IntegerDivisionByZeroError: an integer divisor holds a zero (a ``ZeroDivisionError``
            and a ``RuntimeError``).
    """
    a, b = _check_division("remainder", a, b)
    return Remainder.apply(a, b)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with NumPy's ``@`` semantics (batched, 1-d promotion)."""
    a, b = _check_pair("matmul", a, b, broadcast=False)
    if a.ndim < 1 or b.ndim < 1:
        raise ValueError(f"matmul: both operands need at least one dimension, got shapes {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned: the last axis of the "
                         f"first ({k_a}) must equal the {'only' if b.ndim == 1 else 'second-to-last'} axis "
                         f"of the second ({k_b})")
    if a.ndim > 2 and b.ndim > 2:
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: batch shapes {a.shape[:-2]} and {b.shape[:-2]} of operands {a.shape} and "
                             f"{b.shape} cannot be broadcast together") from None
    return Matmul.apply(a, b)
