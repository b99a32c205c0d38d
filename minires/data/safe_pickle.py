"""A restricted unpickler for CIFAR batch files: bytes, numbers, lists, dicts, and arrays from bytes.

The CIFAR "python version" archives hold pickles. A pickle can name any importable
callable and run it while loading, so a batch file from an untrusted mirror could run
code, and even NumPy's own globals are unsafe: ``numpy.ndarray((64, 3072), uint8)``
creates an array of uninitialised memory. :func:`safe_load` resolves NumPy's globals to
stand-ins defined here that build an array only from bytes of exactly the right length
(the way NumPy pickles arrays: ``_reconstruct`` then ``__setstate__`` with the raw data),
refuses every other global before calling it, and checks the pickle's memo indexes and
size first (:func:`minires.io.pickle_guard.check_pickle`).
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
import re

import numpy as np

from ..io.errors import CheckpointError, short_repr
from ..io.limits import ReadLimits
from ..io.pickle_guard import check_pickle

_LIMITS = ReadLimits(max_pickle_ops=2_000_000, max_memo=1_000_000)
_HINT = "a CIFAR batch never needs that: the file is corrupt or was tampered with"
_SIMPLE_DTYPE = re.compile(r"^[<>|=]?(b1|[iu][1248]|f[248])$")
_MAX_DIMS = 32


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle named something other than NumPy array reconstruction."""


def _refuse(what: str):
    raise UnsafePickleError(f"refusing {what}: CIFAR batch files may only contain bytes, numbers, strings, lists, "
                            "dicts and NumPy arrays rebuilt from their bytes (the file is corrupt or was tampered "
                            "with; nothing in it was run)")


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        _refuse(f"_codecs.encode({type(text).__name__}, {short_repr(encoding)}): only latin-1 text is allowed")
    return codecs.encode(text, "latin1")


def _ndarray(*args, **kwargs):
    """Stand-in for ``numpy.ndarray``: a marker for ``_reconstruct``, never a constructor."""
    _refuse("numpy.ndarray(...), which would create an array of uninitialised memory")


class _DType:
    """Stand-in for ``numpy.dtype(spec, align, copy)``: plain numeric dtypes only."""

    __slots__ = ("dtype",)

    def __init__(self, spec, align=False, copy=True):
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or not _SIMPLE_DTYPE.match(spec):
            _refuse(f"numpy.dtype({short_repr(spec)}): only plain bool, integer and float dtypes are allowed")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state):
        # NumPy's dtype state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[2:5] == (None, None, None)):
            _refuse(f"numpy dtype state {short_repr(state)}")
        order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            _refuse(f"numpy dtype byte order {short_repr(order)}")
        self.dtype = self.dtype.newbyteorder("=" if order == "|" else order)


def _array_from_bytes(raw, dtype, shape, fortran) -> np.ndarray:
    if not isinstance(dtype, _DType):
        _refuse(f"an array of dtype {short_repr(dtype)}")
    if not (isinstance(shape, tuple) and len(shape) <= _MAX_DIMS and all(type(n) is int and n >= 0 for n in shape)):
        _refuse(f"an array of shape {short_repr(shape)}")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != math.prod(shape) * dtype.dtype.itemsize:
        _refuse(f"array data of {len(raw) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__} bytes "
                f"for shape {shape} of {dtype.dtype}")
    array = np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=dtype.dtype.newbyteorder("="), copy=True)


class _PendingArray:
    """What ``_reconstruct`` returns: an empty shell that ``__setstate__`` fills from raw bytes."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and self.array is None):
            _refuse(f"numpy array state {short_repr(state)}")
        _, shape, dtype, fortran, raw = state
        self.array = _array_from_bytes(raw, dtype, shape, bool(fortran))


def _reconstruct(cls, shape, typecode):
    if cls is not _ndarray or shape != (0,) or typecode not in (b"b", "b"):
        _refuse(f"numpy _reconstruct({short_repr(cls)}, {short_repr(shape)}, {short_repr(typecode)})")
    return _PendingArray()


def _frombuffer(buffer, dtype, shape, order):
    return _array_from_bytes(bytes(buffer) if isinstance(buffer, bytearray) else buffer, dtype, shape, order == "F")


def _scalar(dtype, raw):
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    return _array_from_bytes(raw, dtype, (), False)[()]


_GLOBALS = {
    **{(m, "_reconstruct"): _reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _ndarray,
    ("numpy", "dtype"): _DType,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves NumPy's array globals to checked stand-ins and refuses everything else."""

    def find_class(self, module, name):  # noqa: D102
        try:
            return _GLOBALS[(module, name)]
        except (KeyError, TypeError):
            _refuse(f"to load a pickle that references {short_repr(module)[1:-1]}.{short_repr(name)[1:-1]}")


def _resolve(obj, done: dict, depth: int = 0):
    """Replace the filled :class:`_PendingArray` shells by their arrays (each object once)."""
    if isinstance(obj, (bytes, str, int, float, type(None), np.ndarray, np.generic)):
        return obj
    if id(obj) in done:
        return done[id(obj)]
    if depth > 16:
        raise ValueError("nested deeper than any CIFAR batch")
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            _refuse("an array shell that was never given its data")
        result = obj.array
    elif isinstance(obj, dict):
        result = {_resolve(k, done, depth + 1): _resolve(v, done, depth + 1) for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        result = type(obj)(_resolve(v, done, depth + 1) for v in obj)
    else:
        _refuse(f"an object of type {type(obj).__name__}")
    done[id(obj)] = result
    return result


def safe_load(data, source: str = "<bytes>"):
    """Unpickle CIFAR batch bytes, allowing only plain data and NumPy arrays rebuilt from bytes.

    Args:
        data: the pickle bytes, or a binary file object (read whole: callers bound its size).
        source: a name for error messages (the file path).

    Returns:
        The unpickled object; strings of Python 2 pickles come back as ``bytes``
        (``encoding='bytes'``, as for the original CIFAR files).

    Raises:
        UnsafePickleError: the pickle names a global other than NumPy array
            reconstruction, or asks for an array without its data.
        ValueError: the bytes are not a readable pickle, or one past the memo and size
            limits no CIFAR batch comes near.
    """
    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else data.read()
    stream = io.BytesIO(raw)
    try:
        check_pickle(stream, source, _LIMITS, hint=_HINT)
        return _resolve(RestrictedUnpickler(stream, encoding="bytes").load(), {})
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{source}: {exc}") from None
    except CheckpointError as exc:
        raise ValueError(f"{source}: not a readable CIFAR pickle ({exc})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, RecursionError,
            MemoryError, OverflowError) as exc:
        raise ValueError(f"{source}: not a readable CIFAR pickle ({type(exc).__name__}: "
                         f"{short_repr(str(exc))})") from None
