"""Elementwise ops of one tensor: neg, abs, exp, log, sqrt, and powers with a number (pow, rpow)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..autograd import Function, Tensor
from ..autograd.dtypes import DEFAULT_FLOAT, result_type
from ..backend import get_array_module
from .shape import cast


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        # d(-a)/da = -1
        return -grad

    jvp = Function.linear_jvp


class Pow(Function):
    def forward(self, a, exponent):
        self.a, self.exponent = a, exponent
        return (a ** exponent).astype(a.dtype, copy=False)  # NumPy makes bool ** bool int8

    def backward(self, grad):
        # d(a^p)/da = p a^(p-1); for p = 0 it is 0 everywhere (also at a = 0, where 0 * 0^-1 would be NaN)
        if self.exponent == 0:
            return get_array_module(grad).zeros_like(grad)
        return grad * (self.exponent * self.a ** (self.exponent - 1))

    def jvp(self, tangents, inputs, output, exponent):
        # d(a^p) = p a^(p-1) da; for p = 0 it is 0 everywhere (as the backward)
        if exponent == 0:
            return get_array_module(tangents[0]).zeros_like(tangents[0])
        return exponent * inputs[0] ** (exponent - 1) * tangents[0]


class RPow(Function):
    """``base ** exponent`` for a Python-number ``base`` and a tensor ``exponent`` (``number ** Tensor``)."""

    def forward(self, exponent, base):
        xp = get_array_module(exponent)
        if exponent.dtype.kind in "biu" and isinstance(base, int):
            return _integer_rpow(xp, base, exponent).astype(result_type(Tensor(exponent), base), copy=False)
        if exponent.dtype.kind in "biu":
            exponent = exponent.astype(DEFAULT_FLOAT)  # PyTorch: a float base and an integer tensor give float32
        self.base, self.exponent = base, exponent
        self.out = xp.power(exponent.dtype.type(base), exponent)
        return self.out

    def backward(self, grad):
        # d(b^x)/dx = b^x log(b)
        return grad * rpow_derivative(self.base, self.exponent, self.out)

    def jvp(self, tangents, inputs, output, base):
        # d(b^x) = b^x log(b) dx (0 for b = 0 where x >= 0, as the backward)
        return rpow_derivative(base, inputs[0], output) * tangents[0]


def rpow_derivative(base, exponent, out):
    """``d(base ** x)/dx = base ** x * log(base)`` with PyTorch's edges, shaped like ``out``.

    ``log(base)`` is taken in double precision, as PyTorch does for a scalar base: NaN for a
    negative base, ``-inf`` for 0. Base 0 has derivative 0 where ``x >= 0`` (PyTorch's rule,
    so that ``0 ** x`` at ``x = 0``, where it is 1, and at ``x > 0`` does not give NaN).
    """
    xp = get_array_module(out)
    with np.errstate(invalid="ignore"):  # NaN where PyTorch gives NaN (0 * inf, log of a negative base)
        if base == 0:
            return xp.where(exponent >= 0, xp.zeros((), out.dtype), out * -math.inf)
        return out * float(np.log(np.float64(base)))


def _integer_rpow(xp, base: int, exponent):
    """``base ** exponent`` in integers, PyTorch's way: a negative power is 0 unless ``|base| == 1``."""
    exponent = exponent.astype(np.int64)
    nonnegative = xp.power(np.int64(base), xp.maximum(exponent, 0))
    if base == 1:
        negative = 1
    elif base == -1:
        negative = 1 - 2 * (exponent % 2)
    else:
        negative = 0
    return xp.where(exponent < 0, xp.asarray(negative, dtype=np.int64), nonnegative).astype(np.int64)


class Exp(Function):
    def forward(self, a):
        self.out = get_array_module(a).exp(a)
        return self.out

    def backward(self, grad):
        # d(e^a)/da = e^a
        return grad * self.out

    def jvp(self, tangents, inputs, output):
        return output * tangents[0]  # d e^a = e^a da


class Log(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).log(a)

    def backward(self, grad):
        # d(log a)/da = 1/a
        return grad / self.a

    def jvp(self, tangents, inputs, output):
        return tangents[0] / inputs[0]  # d log(a) = da / a


class Sqrt(Function):
    def forward(self, a):
        self.out = get_array_module(a).sqrt(a)
        return self.out

    def backward(self, grad):
        # d(sqrt a)/da = 1 / (2 sqrt a)
        return grad / (2 * self.out)

    def jvp(self, tangents, inputs, output):
        return tangents[0] / (2 * output)  # d sqrt(a) = da / (2 sqrt(a))


class Abs(Function):
    def forward(self, a):
        # (a > 0) - (a < 0): 0 at 0 and at NaN, as PyTorch's gradient (NumPy's sign(NaN) is NaN)
        self.sign = (a > 0).astype(a.dtype) - (a < 0).astype(a.dtype)
        return get_array_module(a).abs(a)

    def backward(self, grad):
        # d|a|/da = sign(a) (0 at 0, as PyTorch)
        return grad * self.sign

    def jvp(self, tangents, inputs, output):
        return get_array_module(output).sign(inputs[0]) * tangents[0]  # d|a| = sign(a) da


def neg(a: Tensor) -> Tensor:
    """``-a``."""
    return Neg.apply(a)


def pow(a: Tensor, exponent) -> Tensor:  # noqa: A001
    """``a ** exponent`` for a real Python/NumPy-number exponent.

    The result dtype is :func:`result_type` of the pair: an integer or bool tensor with a
    float exponent gives float32, a bool tensor with an int exponent int64.

    Raises:
        TypeError: ``exponent`` is not a real number.
        ValueError: an integer tensor to a negative integer power.
    """
    if not isinstance(exponent, (numbers.Real, np.bool_)):
        raise TypeError(f"pow: exponent must be a Python number, got {type(exponent).__name__}")
    exponent = exponent.item() if isinstance(exponent, np.generic) else exponent  # NumPy scalars count as numbers
    a = cast(a, result_type(a, exponent))
    if a.dtype.kind in "iu" and exponent < 0:
        raise ValueError(f"pow: integers to negative integer powers are not allowed ({a.dtype} ** {exponent})")
    return Pow.apply(a, exponent=exponent)


def rpow(base, exponent: Tensor) -> Tensor:
    """``base ** exponent`` for a real Python/NumPy number ``base`` (what ``2.0 ** t`` calls).

    The result is ``exponent``'s dtype for a floating tensor; an integer or bool tensor
    gives float32 for a float base and, for an integer base, keeps its integer dtype (a
    bool tensor gives int64): PyTorch's promotion, :func:`result_type`.
    The gradient is ``base ** exponent * log(base)``: NaN for a negative base, 0 for base
    0 where ``exponent >= 0`` (see :func:`rpow_derivative`).

    Raises:
        TypeError: ``base`` is not a real number (a string, None, a complex number, a
            list or an array with dimensions), or ``exponent`` is not a Tensor.
    """
    if not isinstance(exponent, Tensor):
        raise TypeError(f"rpow: exponent must be a Tensor, got {type(exponent).__name__}")
    if isinstance(base, (np.ndarray, np.generic)) and base.ndim == 0:  # np.True_ is not a numbers.Real
        base = base.item()
    if not isinstance(base, numbers.Real):
        raise TypeError(f"rpow: base must be a real number (int, float or a NumPy scalar) to raise to a "
                        f"Tensor power, got {type(base).__name__}")
    base = int(base) if isinstance(base, numbers.Integral) else float(base)
    return RPow.apply(exponent, base=base)


def exp(a: Tensor) -> Tensor:
    """Elementwise ``e ** a``."""
    return Exp.apply(a)


def log(a: Tensor) -> Tensor:
    """Elementwise natural logarithm."""
    return Log.apply(a)


def sqrt(a: Tensor) -> Tensor:
    """Elementwise square root."""
    return Sqrt.apply(a)


def abs(a: Tensor) -> Tensor:  # noqa: A001
    """Elementwise absolute value."""
    return Abs.apply(a)
