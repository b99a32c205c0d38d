"""``Tensor``: an array (NumPy or CuPy) plus what reverse-mode autodiff needs."""

from __future__ import annotations

import contextlib
import numbers
import operator
from collections import OrderedDict

import numpy as np

from .. import backend
from .dtypes import DEFAULT_FLOAT, DEFAULT_INT, category, resolve_dtype, result_type  # noqa: F401 (importable from here)
from .engine import run_backward
from .hooks import RemovableHandle


def _ops():
    """The op modules, imported on first use (autograd sits below ops)."""
    from ..ops import arith, reduce, shape  # noqa: PLC0415

    return arith, shape, reduce


def _binary(op_name: str, true_divide: bool = False):
    """The method pair ``a <op> b`` and its reflection ``b <op> a`` of an op in ``ops.arith``."""
    def method(self, other):
        return getattr(_ops()[0], op_name)(self, self._operand(other, true_divide))

    def reflected(self, other):
        return getattr(_ops()[0], op_name)(self._operand(other, true_divide), self)

    return method, reflected


def _comparison(compare):
    """An elementwise comparison giving a boolean tensor outside the graph."""
    def method(self, other):
        return Tensor(compare(self.data, other.data if isinstance(other, Tensor) else other))

    return method


class Tensor:
    """An n-dimensional array that can record the ops applied to it.

    Attributes:
        data: the NumPy (CPU) or CuPy (GPU) array.
        grad: the accumulated gradient array of a leaf (or a tensor that called
            ``retain_grad``), or ``None``.
        requires_grad: whether ops on this tensor are recorded for backward.
    """

    __array_priority__ = 1000  # make ``ndarray + Tensor`` call Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        if not (isinstance(data, np.ndarray) or backend.is_cupy_array(data)):
            data = np.asarray(data)
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got dtype {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._hooks = None     # an OrderedDict once a hook is registered
        self._retains_grad = False

    @classmethod
    def _from_op(cls, array):
        t = cls.__new__(cls)
        t.data = array
        t.grad = None
        t.requires_grad = False
        t._ctx = None
        t._hooks = None
        t._retains_grad = False
        return t

    # --- properties -----------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return backend.array_device(self.data)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None):
        """The shape (PyTorch's ``size()``), or one dimension of it."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self):
        return self._ctx

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __repr__(self) -> str:
        extra = ", requires_grad=True" if self.requires_grad else ""
        dev = "" if self.device == "cpu" else f", device='{self.device}'"
        body = np.array2string(backend.as_numpy(self.data), separator=", ", precision=4,
                               threshold=50, prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    # --- autograd -------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into each leaf's ``.grad``.

        Args:
            grad: the upstream gradient, shaped like ``self``; may be omitted for a
                one-element tensor (it is then 1).
            retain_graph: keep saved buffers so backward can run again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"grad can be implicit only for one-element tensors, this one has shape {self.shape}"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            if backend.array_device(grad) != self.device:
                raise ValueError(f"backward: grad is on {backend.array_device(grad)}, tensor on {self.device}")
            grad = xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward: grad has shape {tuple(grad.shape)}, expected {self.shape}")
        run_backward(self, grad, retain_graph=retain_graph)

    def register_hook(self, hook):
        """Call ``hook(grad_tensor)`` when this tensor's gradient is computed.

        The hook may return a replacement gradient (Tensor or array) or ``None``.
        Returns a handle whose ``remove()`` unregisters the hook.
        """
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self._hooks is None:
            self._hooks = OrderedDict()
        handle = RemovableHandle(self._hooks)
        self._hooks[handle.id] = hook
        return handle

    def retain_grad(self) -> None:
        """Keep ``.grad`` on a non-leaf tensor after backward."""
        self._retains_grad = True

    def detach(self) -> "Tensor":
        """A tensor sharing this one's data, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got dtype {self.dtype}")
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("cannot turn off requires_grad of a non-leaf tensor; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self) -> None:
        self.grad = None

    # --- conversion -----------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU if needed)."""
        return backend.as_numpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a one-element tensor, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def to(self, target) -> "Tensor":
        """Move to a device (``'cpu'``, ``'cuda'``) or cast to a dtype; differentiable."""
        _, shape, _ = _ops()
        if backend.names_device(target):
            return shape.to_device(self, target)
        return shape.cast(self, target)

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self, index: int = 0) -> "Tensor":
        return self.to(f"cuda:{index}")

    def float(self) -> "Tensor":
        return self.to(np.float32)

    def double(self) -> "Tensor":
        return self.to(np.float64)

    def astype(self, dtype) -> "Tensor":
        return self.to(dtype)

    # --- arithmetic -----------------------------------------------------------------
    def _operand(self, other, true_divide: bool = False):
        """``other`` as a Tensor beside ``self``; the one place numbers meet tensors.

        A real number (or a 0-d array) becomes a 0-d tensor of :func:`result_type` of the
        pair (float32 for ``true_divide`` where that is an integer dtype), so the op computes
        in PyTorch's dtype; a bool stays bool, which the ops lift to the other operand's
        dtype (and ``sub`` refuses, as PyTorch does). An integer out of the dtype's range
        wraps around, as in PyTorch.
        """
        if isinstance(other, Tensor):
            return other
        if other is None or isinstance(other, (str, bytes)):
            raise TypeError(f"unsupported operand type {type(other).__name__} for Tensor arithmetic; "
                            "expected a Tensor, a real number or an array")
        if (isinstance(other, np.ndarray) or backend.is_cupy_array(other)) and other.ndim == 0:
            other = backend.as_numpy(other)[()]  # a NumPy scalar
        if isinstance(other, (numbers.Real, np.bool_)):
            dtype = np.dtype(np.bool_) if category(other) == 0 else result_type(self, other)
            if true_divide and dtype.kind != "f":
                dtype = DEFAULT_FLOAT
            array = np.asarray(other).astype(dtype)
            return Tensor(backend.to_device(array, self.device) if self.device != "cpu" else array)
        if isinstance(other, np.ndarray) or backend.is_cupy_array(other):
            return Tensor(other)
        raise TypeError(f"unsupported operand type {type(other).__name__} for Tensor arithmetic")

    __add__, __radd__ = _binary("add")
    __sub__, __rsub__ = _binary("sub")
    __mul__, __rmul__ = _binary("mul")
    __truediv__, __rtruediv__ = _binary("div", true_divide=True)
    __floordiv__, __rfloordiv__ = _binary("floor_divide")
    __mod__, __rmod__ = _binary("remainder")
    __matmul__, __rmatmul__ = _binary("matmul")

    def floor_divide(self, other):
        """``self // other``, rounded toward negative infinity (PyTorch's ``floor_divide``)."""
        return self // other

    def remainder(self, other):
        """``self % other``, with the sign of ``other`` (PyTorch's ``remainder``)."""
        return self % other

    def __pow__(self, exponent):
        return _ops()[0].pow(self, exponent)

    def __rpow__(self, base):
        return _ops()[0].rpow(base, self)

    def __neg__(self):
        return _ops()[0].neg(self)

    def __pos__(self):
        return self

    def exp(self):
        return _ops()[0].exp(self)

    def log(self):
        return _ops()[0].log(self)

    def sqrt(self):
        return _ops()[0].sqrt(self)

    def abs(self):
        return _ops()[0].abs(self)

    # comparisons give boolean tensors outside the graph
    __eq__ = _comparison(operator.eq)
    __ne__ = _comparison(operator.ne)
    __lt__ = _comparison(operator.lt)
    __le__ = _comparison(operator.le)
    __gt__ = _comparison(operator.gt)
    __ge__ = _comparison(operator.ge)
    __hash__ = object.__hash__

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    # --- shape ----------------------------------------------------------------------
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops()[1].reshape(self, shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        return _ops()[1].flatten(self, start_dim, end_dim)

    def transpose(self, *axes):
        """``transpose(a, b)`` swaps two axes (PyTorch); ``transpose(axes)`` permutes."""
        return _ops()[1].transpose(self, *axes)

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops()[1].permute(self, axes)

    @property
    def T(self):  # noqa: N802
        return _ops()[1].permute(self, tuple(reversed(range(self.ndim))))

    def __getitem__(self, index):
        return _ops()[1].getitem(self, index)

    # --- reductions -----------------------------------------------------------------
    def sum(self, axis=None, keepdims: bool = False, dim=None):
        return _ops()[2].sum(self, axis if dim is None else dim, keepdims)

    def mean(self, axis=None, keepdims: bool = False, dim=None):
        return _ops()[2].mean(self, axis if dim is None else dim, keepdims)

    def max(self, axis=None, keepdims: bool = False, dim=None):
        return _ops()[2].max(self, axis if dim is None else dim, keepdims)

    def argmax(self, axis=None):
        return Tensor(self.data.argmax(axis=axis))

    def relu(self):
        from ..ops import activation  # noqa: PLC0415

        return activation.relu(self)

    def sigmoid(self):
        from ..ops import activation  # noqa: PLC0415

        return activation.sigmoid(self)


# --- factories --------------------------------------------------------------------------

def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """Create a tensor from data (nested lists, scalars, NumPy or CuPy arrays, Tensors).

    Python floats become float32 (the default); NumPy arrays and NumPy scalars keep their
    dtype (float64 stays float64); Python ints become int64.

    Args:
        data: the values (copied).
        requires_grad: record ops on it for backward (floating dtypes only).
        dtype: a NumPy dtype or its name, e.g. ``'float64'``.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``None`` for the default device.
    """
    dtype = resolve_dtype(dtype)
    device = backend.parse_device(device)
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.generic):  # a NumPy scalar keeps its dtype, like a NumPy array
        data = np.asarray(data)
    if isinstance(data, np.ndarray) or backend.is_cupy_array(data):
        # NumPy keeps the array's memory order (a channels-last array stays on the CPU fast
        # paths); CuPy arrays are copied as before
        array = data.astype(dtype) if dtype is not None else \
            (data.copy(order="K") if isinstance(data, np.ndarray) else data.copy())
    else:
        try:
            array = np.asarray(data)
        except ValueError:  # NumPy 2 refuses ragged nested sequences outright
            array = np.empty(0, dtype=object)
        if array.dtype == object:
            raise TypeError(f"cannot make a tensor from {type(data).__name__} with ragged or non-numeric items")
        if array.dtype.kind not in "biuf":
            raise TypeError(f"cannot make a tensor from {type(data).__name__} of dtype {array.dtype}; "
                            "expected numbers (bool, int or float)")
        if dtype is not None:
            array = array.astype(dtype)
        elif array.dtype.kind == "f":
            array = array.astype(np.float32)
        elif array.dtype.kind in "iu":
            array = array.astype(np.int64)
    array = backend.to_device(array, device)
    return Tensor(array, requires_grad=requires_grad)


def _factory(fill, shape, dtype, device, requires_grad):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for size in shape:
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (numbers.Integral, np.integer)):
            raise TypeError(f"expected a shape of ints, got {shape!r}")
        if size < 0:
            raise ValueError(f"expected a shape of non-negative sizes, got {shape!r}")
    device = backend.parse_device(device)
    dtype = resolve_dtype(dtype) or np.dtype(np.float32)
    xp = backend.xp_for(device)
    on_gpu = device != "cpu"
    with backend.cupy_module().cuda.Device(int(device.split(":")[1])) if on_gpu else contextlib.nullcontext():
        return Tensor(fill(xp, shape, dtype), requires_grad=requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros (float32 unless ``dtype`` says otherwise)."""
    return _factory(lambda xp, s, d: xp.zeros(s, dtype=d), shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ones (float32 unless ``dtype`` says otherwise)."""
    return _factory(lambda xp, s, d: xp.ones(s, dtype=d), shape, dtype, device, requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples from minires' seeded generator."""
    def fill(xp, s, d):
        values = backend.generator().standard_normal(s).astype(d)
        return values if xp is np else xp.asarray(values)

    return _factory(fill, shape, dtype, device, requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform [0, 1) samples from minires' seeded generator."""
    def fill(xp, s, d):
        values = backend.generator().random(s).astype(d)
        return values if xp is np else xp.asarray(values)

    return _factory(fill, shape, dtype, device, requires_grad)


def zeros_like(t: Tensor, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t: Tensor, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=t.dtype, device=t.device, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """Wrap a NumPy array without copying."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)
