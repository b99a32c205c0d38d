"""Shape ops: reshape, flatten, transpose/permute, indexing, cat, stack, pad, device and dtype moves."""

from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..autograd import Function, Tensor, no_grad
from ..backend import get_array_module


class Reshape(Function):
    def forward(self, a, shape):
        self.in_shape = a.shape
        return a.reshape(shape)

    def backward(self, grad):
        # reshape moves no values: reshape the gradient back
        return grad.reshape(self.in_shape)

    jvp = Function.linear_jvp


class Permute(Function):
    def forward(self, a, axes):
        self.inverse = tuple(np.argsort(axes))
        return a.transpose(axes)

    def backward(self, grad):
        # the gradient of a permutation is the inverse permutation
        return grad.transpose(self.inverse)

    jvp = Function.linear_jvp


class GetItem(Function):
    def forward(self, a, index):
        self.in_shape, self.index, self.dtype = a.shape, index, a.dtype
        return a[index]

    def backward(self, grad):
        # scatter-add the gradient into the indexed positions (repeats accumulate)
        xp = get_array_module(grad)
        out = xp.zeros(self.in_shape, dtype=self.dtype)
        if _is_basic_index(self.index):
            out[self.index] = grad
        else:
            xp.add.at(out, self.index, grad)
        return out

    jvp = Function.linear_jvp


def _is_basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


class Cat(Function):
    def forward(self, *arrays, axis):
        xp = get_array_module(*arrays)
        self.axis = axis
        self.sizes = [a.shape[axis] for a in arrays]
        return xp.concatenate(arrays, axis=axis)

    def backward(self, grad):
        # split the gradient back into the pieces
        bounds = np.cumsum(self.sizes)[:-1]
        xp = get_array_module(grad)
        return tuple(xp.split(grad, bounds, axis=self.axis))

    jvp = Function.linear_jvp


class Stack(Function):
    def forward(self, *arrays, axis):
        xp = get_array_module(*arrays)
        self.axis = axis
        return xp.stack(arrays, axis=axis)

    def backward(self, grad):
        # unstack the gradient
        xp = get_array_module(grad)
        return tuple(xp.moveaxis(grad, self.axis, 0))

    jvp = Function.linear_jvp


class Pad(Function):
    def forward(self, a, pad_width, value):
        xp = get_array_module(a)
        self.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, a.shape))
        return xp.pad(a, pad_width, mode="constant", constant_values=value)

    def backward(self, grad):
        # padded positions are constants: crop the gradient
        return grad[self.slices]

    def jvp(self, tangents, inputs, output, pad_width, value):
        # padding with a constant is affine: pad the tangent with zeros
        return self.forward(tangents[0], pad_width, 0)


class ToDevice(Function):
    def forward(self, a, device):
        self.source = backend.array_device(a)
        return backend.to_device(a, device)

    def backward(self, grad):
        # a copy between devices: copy the gradient back
        return backend.to_device(grad, self.source)

    jvp = Function.linear_jvp


class Cast(Function):
    def forward(self, a, dtype):
        self.source = a.dtype
        return a.astype(dtype)

    def backward(self, grad):
        # a cast: cast the gradient back
        return grad.astype(self.source)

    def jvp(self, tangents, inputs, output, dtype):
        # a cast between floating dtypes is linear; an integer result has no tangent
        return tangents[0].astype(dtype) if np.dtype(dtype).kind == "f" else None


class TensorIndexError(IndexError, ValueError):
    """An invalid index: an ``IndexError`` (as in NumPy/PyTorch, so iteration stops) that is also a ``ValueError``."""


def _check_int(value, what: str, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name}: {what} must be an int, got {value!r}")
    return int(value)


def _normalize_axis(axis: int, ndim: int, name: str) -> int:
    axis = _check_int(axis, "axis", name)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} out of range for a tensor with {ndim} dimensions")
    return axis % ndim


def reshape(a: Tensor, shape) -> Tensor:
    """``a`` with a new shape of the same size (one entry may be -1)."""
    shape = tuple(_check_int(s, "each size", "reshape") for s in shape)
    if any(s < -1 for s in shape):
        raise ValueError(f"reshape: sizes must be >= 0 (or one -1), got {shape}")
    known = int(np.prod([s for s in shape if s != -1]))
    if shape.count(-1) > 1 or (-1 not in shape and known != a.numel()) or (
            -1 in shape and (known == 0 or a.numel() % known)):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} ({a.numel()} elements) to {shape}")
    return Reshape.apply(a, shape=shape)


def flatten(a: Tensor, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    """Merge dimensions ``start_dim..end_dim`` into one (PyTorch's default start is 1 in F)."""
    if a.ndim == 0:
        return reshape(a, (1,))
    start = _normalize_axis(start_dim, a.ndim, "flatten")
    end = _normalize_axis(end_dim, a.ndim, "flatten")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    shape = a.shape[:start] + (int(np.prod(a.shape[start:end + 1])),) + a.shape[end + 1:]
    return Reshape.apply(a, shape=shape)


def permute(a: Tensor, axes) -> Tensor:
    """Reorder the axes of ``a``."""
    axes = tuple(_normalize_axis(ax, a.ndim, "permute") for ax in axes)
    if sorted(axes) != list(range(a.ndim)):
        raise ValueError(f"permute: {axes} is not a permutation of the {a.ndim} axes")
    return Permute.apply(a, axes=axes)


def transpose(a: Tensor, *axes) -> Tensor:
    """``transpose(a, d0, d1)`` swaps two axes; ``transpose(a)`` reverses all; a tuple permutes."""
    if not axes:
        return permute(a, tuple(reversed(range(a.ndim))))
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        return permute(a, axes[0])
    if len(axes) == 2:
        order = list(range(a.ndim))
        i, j = (_normalize_axis(ax, a.ndim, "transpose") for ax in axes)
        order[i], order[j] = order[j], order[i]
        return permute(a, order)
    return permute(a, axes)


def getitem(a: Tensor, index) -> Tensor:
    """Indexing with ints, slices, None, Ellipsis, integer or boolean arrays/tensors."""
    def unwrap(i):
        if isinstance(i, Tensor):
            return i.data
        if isinstance(i, list):
            return backend.to_device(np.asarray(i), a.device)
        return i

    index = tuple(unwrap(i) for i in index) if isinstance(index, tuple) else unwrap(index)
    try:
        return GetItem.apply(a, index=index)
    except IndexError as exc:  # NumPy's message, with what was indexed and how
        raise TensorIndexError(f"getitem: invalid index {index!r} for a tensor of shape {a.shape}: {exc}") from None


def _check_sequence(name, tensors):
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{name}: expected a list or tuple of Tensors, got {type(tensors).__name__}")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{name}: expected a non-empty sequence of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected Tensors, got {type(t).__name__}")
    ndim = tensors[0].ndim
    for t in tensors[1:]:
        if t.ndim != ndim:
            raise ValueError(f"{name}: all tensors need {ndim} dimensions, got shapes "
                             f"{tensors[0].shape} and {t.shape}")
    floats = {t.dtype for t in tensors if t.dtype.kind == "f"}
    if floats and any(t.dtype.kind != "f" for t in tensors) and len(floats) == 1:
        # integer/bool pieces join a floating result in its dtype (PyTorch's promotion), not float64
        dtype = floats.pop()
        tensors = [t if t.dtype.kind == "f" else cast(t, dtype) for t in tensors]
    return tensors


def cat(tensors, axis: int = 1) -> Tensor:
    """Concatenate tensors along ``axis`` (default 1, the channel axis of NCHW)."""
    tensors = _check_sequence("cat", tensors)
    axis = _normalize_axis(axis, tensors[0].ndim, "cat")
    first = tensors[0].shape
    for t in tensors[1:]:
        if t.shape[:axis] != first[:axis] or t.shape[axis + 1:] != first[axis + 1:]:
            raise ValueError(f"cat: shapes {first} and {t.shape} differ outside axis {axis}")
    return Cat.apply(*tensors, axis=axis)


def stack(tensors, axis: int = 0) -> Tensor:
    """Stack equally shaped tensors along a new ``axis``."""
    tensors = _check_sequence("stack", tensors)
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: shapes {tensors[0].shape} and {t.shape} differ")
    axis = _normalize_axis(axis, tensors[0].ndim + 1, "stack")
    return Stack.apply(*tensors, axis=axis)


def pad(a: Tensor, pad, value: float = 0.0) -> Tensor:
    """Constant padding with PyTorch's ``F.pad`` convention.

    Args:
        a: input tensor.
        pad: ``(left, right)`` for the last axis, then ``(top, bottom)`` for the one
            before, and so on: ``(PW_left, PW_right, PH_top, PH_bottom)`` for NCHW.
        value: the fill value.
    """
    if not isinstance(pad, (list, tuple)):
        raise TypeError(f"pad: expected a tuple of ints (left, right, top, bottom, ...), got {pad!r}")
    pad = tuple(_check_int(p, "each padding size", "pad") for p in pad)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"pad: value must be a real number, got {value!r}")
    if len(pad) % 2 or len(pad) // 2 > a.ndim:
        raise ValueError(f"pad: expected an even number of at most {2 * a.ndim} values, got {pad}")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding {pad} is not supported")
    widths = [(0, 0)] * a.ndim
    for i in range(len(pad) // 2):
        widths[a.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return Pad.apply(a, pad_width=tuple(widths), value=value)


def to_device(a: Tensor, device) -> Tensor:
    """Copy ``a`` to ``device`` (differentiable)."""
    device = backend.parse_device(device)
    if device == a.device:
        return a
    if device != "cpu":
        backend.cupy_module()
    return ToDevice.apply(a, device=device)


def cast(a: Tensor, dtype) -> Tensor:
    """Convert ``a`` to ``dtype`` (differentiable between floating dtypes)."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unknown dtype or device {dtype!r}") from None
    if dtype == a.dtype:
        return a
    if dtype.kind != "f":  # only floating tensors carry gradients
        with no_grad():
            return Cast.apply(a, dtype=dtype)
    return Cast.apply(a, dtype=dtype)
