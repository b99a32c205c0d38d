"""Reductions: sum, mean, max (with gradients broadcast back)."""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function, Tensor
from ..autograd.function import check_float_tensor
from ..backend import get_array_module


def _axes(axis, ndim: int, name: str):
    if axis is None:
        return None
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for ax in items:
        if isinstance(ax, (bool, np.bool_)) or not isinstance(ax, (numbers.Integral, np.integer)):
            raise TypeError(f"{name}: axis must be None, an int or a tuple of ints, got {axis!r}")
        ax = int(ax)
        if not -ndim <= ax < ndim:
            raise ValueError(f"{name}: axis {ax} out of range for a tensor with {ndim} dimensions")
        out.append(ax % ndim)
    return tuple(sorted(set(out)))


def _keepdims(keepdims, name: str) -> bool:
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"{name}: keepdims must be a bool, got {keepdims!r}")
    return bool(keepdims)


def _expand(grad, in_shape, axes, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input (size 1 on the reduced axes)."""
    if keepdims:
        return grad
    return grad.reshape([1 if axes is None or i in axes else n for i, n in enumerate(in_shape)])


class Sum(Function):
    def forward(self, a, axis, keepdims):
        self.in_shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, grad):
        # d(sum)/da = 1 for every summed element
        xp = get_array_module(grad)
        return xp.broadcast_to(_expand(grad, self.in_shape, self.axis, self.keepdims), self.in_shape).copy()

    jvp = Function.linear_jvp


class Mean(Function):
    def forward(self, a, axis, keepdims):
        self.in_shape, self.axis, self.keepdims = a.shape, axis, keepdims
        self.count = a.size if axis is None else int(np.prod([a.shape[i] for i in axis]))
        return a.mean(axis=axis, keepdims=keepdims)

    def backward(self, grad):
        # d(mean)/da = 1/count
        xp = get_array_module(grad)
        g = _expand(grad, self.in_shape, self.axis, self.keepdims) / self.count
        return xp.broadcast_to(g, self.in_shape).astype(grad.dtype, copy=True)

    jvp = Function.linear_jvp


class Max(Function):
    def forward(self, a, axis, keepdims):
        self.a, self.axis, self.keepdims = a, axis, keepdims
        self.out = a.max(axis=axis, keepdims=True)
        if keepdims:
            return self.out
        return self.out.reshape(()) if axis is None else get_array_module(a).squeeze(self.out, axis=axis)

    def backward(self, grad):
        # the gradient goes to the maxima, split evenly between ties
        mask = (self.a == self.out)
        count = mask.sum(axis=self.axis, keepdims=True)
        g = _expand(grad, self.a.shape, self.axis, self.keepdims)
        return (mask * (g / count)).astype(grad.dtype)

    def jvp(self, tangents, inputs, output, axis, keepdims):
        # the tangent of the maximum: the mean tangent over tied maxima (as the backward splits them)
        a, tangent = inputs[0], tangents[0]
        mask = a == a.max(axis=axis, keepdims=True)
        tangent = (tangent * mask).sum(axis=axis, keepdims=True) / mask.sum(axis=axis, keepdims=True)
        return tangent.reshape(output.shape)


def sum(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (an int, a tuple, or None for all)."""
    return Sum.apply(a, axis=_axes(axis, a.ndim, "sum"), keepdims=_keepdims(keepdims, "sum"))


def mean(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (an int, a tuple, or None for all)."""
    check_float_tensor("mean", a, what=None)
    return Mean.apply(a, axis=_axes(axis, a.ndim, "mean"), keepdims=_keepdims(keepdims, "mean"))


def max(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over ``axis``; the gradient is shared evenly between tied maxima."""
    if a.numel() == 0:
        raise ValueError("max: empty tensor")
    return Max.apply(a, axis=_axes(axis, a.ndim, "max"), keepdims=_keepdims(keepdims, "max"))
