"""The restricted unpickler for PyTorch checkpoints: tensor metadata only, nothing imported or run.

The pickle may name only the globals that rebuilding tensors needs
(:data:`ALLOWED_GLOBALS`): ``torch._utils._rebuild_tensor`` (the pre-1.0 format) /
``_v2`` / ``_v3`` / ``_rebuild_parameter``, the ``torch.*Storage`` types (``torch.cuda.*``
too, as GPU-trained legacy files name them), ``torch`` dtypes and
``collections.OrderedDict``. Each resolves to a small stand-in defined here, never to the
real object, so ``torch`` is not imported. Any other global (``os.system``,
``builtins.eval``, ...) raises :class:`~minires.io.errors.UnsafeCheckpointError` before it
is looked up. The stand-ins check every size, stride and offset when the pickle calls
them, before any tensor data is read: a view may not reach past, nor be larger than,
its storage.
"""

from __future__ import annotations

import collections
import math
import pickle

import numpy as np

from .errors import CheckpointError, UnsafeCheckpointError, short_repr
from .limits import MAX_DIMS, ReadLimits, is_index
from .pickle_guard import check_pickle

# torch storage class name / dtype name -> NumPy dtype ("bfloat16" read as uint16 bits, widened later)
BF16 = "bfloat16"
_STORAGE_TYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": BF16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}
_TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64,
    "float16": np.float16, "half": np.float16, "bfloat16": BF16, "int64": np.int64, "long": np.int64,
    "int32": np.int32, "int": np.int32, "int16": np.int16, "short": np.int16, "int8": np.int8,
    "uint8": np.uint8, "bool": np.bool_, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
}


def itemsize(dtype) -> int:
    """Bytes per element of a storage dtype (``'bfloat16'`` included)."""
    return 2 if dtype == BF16 else np.dtype(dtype).itemsize


def dtype_name(dtype) -> str:
    """The dtype's name as the file stores it (``'bfloat16'`` for bfloat16)."""
    return BF16 if dtype == BF16 else np.dtype(dtype).name


class Refusal(Exception):
    """Raised by the stand-ins, which do not know the file's name; :func:`safe_unpickle` adds it."""

    def __init__(self, message: str, error: type = CheckpointError):
        super().__init__(message)
        self.error = error


class _Inert:
    """Base of the stand-ins: the pickle's BUILD opcode cannot set state on them."""

    __slots__ = ()

    def __setstate__(self, state):
        raise Refusal(f"checkpoint tries to set state on a {type(self).__name__}; refusing", UnsafeCheckpointError)


class StorageType(_Inert):
    """Stand-in for ``torch.FloatStorage`` and friends: only carries the element dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class _DType(_Inert):
    """Stand-in for a ``torch.<dtype>`` object (used by ``_rebuild_tensor_v3``)."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class Storage(_Inert):
    """A flat storage: its key in the file, element dtype, element count and element offset.

    ``numel`` and ``offset`` are what the file claims; the container reader checks them
    against the stored bytes before reading any.
    """

    __slots__ = ("key", "dtype", "numel", "offset")

    def __init__(self, key, dtype, numel, offset=0):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset


def _index_tuple(value, what):
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS:
        raise Refusal(f"tensor {what} must be a tuple of at most {MAX_DIMS} integers, got {short_repr(value)}")
    if not all(is_index(v) for v in value):
        raise Refusal(f"invalid tensor {what} {short_repr(value)}: negative, non-integer or past 2**63")
    return tuple(value)


class LazyTensor(_Inert):
    """A tensor to materialise once its storage bytes are available, checked on creation.

    Raises:
        Refusal: malformed metadata, or a view that reaches past or is larger than its storage.
    """

    __slots__ = ("storage", "storage_offset", "size", "stride", "dtype")

    def __init__(self, storage, storage_offset, size, stride, dtype=None):
        if not isinstance(storage, Storage):
            raise Refusal(f"tensor rebuild got {type(storage).__name__} where a storage was expected")
        (storage_offset,) = _index_tuple((storage_offset,), "offset")
        size, stride = _index_tuple(size, "size"), _index_tuple(stride, "stride")
        if len(size) != len(stride):
            raise Refusal(f"tensor size {size} and stride {stride} differ in length")
        self.storage, self.storage_offset, self.size, self.stride = storage, storage_offset, size, stride
        self.dtype = storage.dtype if dtype is None else dtype
        self._check_extent()

    @property
    def numel(self) -> int:
        """Number of elements of the tensor (a Python int, no overflow)."""
        return math.prod(self.size)

    def _check_extent(self):
        available = self.storage.numel * itemsize(self.storage.dtype) // itemsize(self.dtype)
        numel = self.numel
        if numel == 0:
            return
        last = self.storage_offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= available:
            raise Refusal(f"tensor of size {self.size} and stride {self.stride} at offset {self.storage_offset} "
                          f"reads past its storage of {available} elements")
        if numel > available:
            raise Refusal(f"tensor of size {self.size} ({numel} elements) is a view larger than its storage of "
                          f"{available} elements (stride {self.stride}); refusing to expand it")


def _rebuild_tensor(storage, storage_offset, size, stride):
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    if not isinstance(dtype, _DType):
        raise Refusal(f"_rebuild_tensor_v3 expects a torch dtype, got {type(dtype).__name__}")
    return LazyTensor(storage, storage_offset, size, stride, dtype=dtype.dtype)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, LazyTensor):
        raise Refusal(f"_rebuild_parameter expects a tensor, got {type(data).__name__}")
    return data


#: (module, name) pairs a checkpoint's pickle may reference, and what each resolves to.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): StorageType(name, dtype) for name, dtype in _STORAGE_TYPES.items()},
    **{("torch.cuda", name): StorageType(name, dtype) for name, dtype in _STORAGE_TYPES.items()},
    ("torch.storage", "UntypedStorage"): StorageType("UntypedStorage", np.uint8),
    **{("torch", name): _DType(name, dtype) for name, dtype in _TORCH_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses everything else.

    Args:
        file: a binary file object positioned at a pickle.
        source: the checkpoint's name, for error messages.
        persistent_load: the storage resolver (``None`` refuses persistent ids).
    """

    def __init__(self, file, source: str, persistent_load=None):
        super().__init__(file, encoding="utf-8")
        self._source = source
        self._persistent = persistent_load

    def find_class(self, module, name):  # noqa: D102  (pickle protocol hook)
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafeCheckpointError(
                f"refusing to load {self._source!r}: its pickle references the global "
                f"'{short_repr(module)[1:-1]}.{short_repr(name)[1:-1]}', which tensor storage does not need "
                f"(nothing was imported or run; allowed globals: collections.OrderedDict, "
                f"torch._utils._rebuild_tensor/_v2/_v3, torch._utils._rebuild_parameter, torch.*Storage, "
                f"torch dtypes)") from None

    def persistent_load(self, pid):  # noqa: D102  (pickle protocol hook)
        if self._persistent is None:
            raise CheckpointError(f"{self._source!r}: unexpected persistent id {short_repr(pid)} in this pickle")
        return self._persistent(pid)


def safe_unpickle(stream, source: str, limits: ReadLimits, persistent_load=None):
    """Check the pickle at ``stream``'s position (:func:`check_pickle`), then load it restricted.

    Args:
        stream: an ``io.BytesIO`` positioned at the pickle; left just after it.
        source: the file, for messages.
        limits: the :class:`ReadLimits` to enforce.
        persistent_load: resolves ``('storage', ...)`` ids into :class:`Storage` objects.

    Returns:
        The object graph, tensors as :class:`LazyTensor`.

    Raises:
        UnsafeCheckpointError: a global outside :data:`ALLOWED_GLOBALS`.
        ResourceLimitError: the pickle breaks ``limits``.
        CheckpointError: anything else malformed.
    """
    check_pickle(stream, source, limits)
    try:
        return RestrictedUnpickler(stream, source, persistent_load).load()
    except Refusal as exc:
        raise exc.error(f"{source!r}: {exc}") from None
    except CheckpointError:
        raise
    except Exception as exc:  # malformed streams raise many types; report them uniformly
        raise CheckpointError(f"{source!r}: corrupt or unsupported pickle ({type(exc).__name__}: "
                              f"{short_repr(str(exc))})") from None
