"""Weight import and export: PyTorch checkpoints (without PyTorch), ``.safetensors`` and ``.npz``.

Example: a published CIFAR ResNet checkpoint (``DataParallel`` names, classifier called ``linear``):
    >>> import minires
    >>> state = minires.io.load_state_dict("resnet20-12fca82f.th")  # doctest: +SKIP
    >>> state = minires.io.rename_keys(state, {"linear": "fc"}, strip_prefix="module.")  # doctest: +SKIP
    >>> minires.models.resnet20().load_state_dict(state)  # doctest: +SKIP

The format is told from the file's bytes (:func:`sniff_format`); the extension is only a
hint. Readers never execute code from a file: ``.npz`` members are parsed without pickle,
``.safetensors`` by a JSON-header parser written here, and PyTorch checkpoints through a
restricted unpickler that resolves only the globals that rebuilding tensors needs
(:mod:`minires.io.torch_pickle`). Every size a file states is checked against the file
and against :class:`ReadLimits` before anything is allocated or decompressed, so a
hostile file is refused with a :class:`CheckpointError` instead of costing memory or time.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from .. import backend
from .errors import CheckpointError, ResourceLimitError, UnsafeCheckpointError, short_repr
from .keys import NESTED_STATE_KEYS, extract_state_dict, guess_renames, rename_keys
from .limits import DEFAULT_LIMITS, ReadLimits
from .npz import describe_npz, read_npz, write_npz
from .safetensors import describe_safetensors, read_safetensors, write_safetensors
from .sniff import FORMATS, require_format, sniff_format
from .torch_format import TensorInfo, open_torch_checkpoint, read_torch_checkpoint
from .torch_pickle import ALLOWED_GLOBALS, LazyTensor, RestrictedUnpickler

#: extensions commonly used for the readable formats (only a hint: the bytes decide)
READ_FORMATS = {".npz": "NumPy archive", ".safetensors": "safetensors", ".pth": "PyTorch checkpoint",
                ".pt": "PyTorch checkpoint", ".th": "PyTorch checkpoint", ".tar": "PyTorch checkpoint",
                ".bin": "PyTorch checkpoint", ".ckpt": "PyTorch checkpoint"}
WRITE_FORMATS = {".npz": "NumPy archive", ".safetensors": "safetensors"}

# what malformed input can still make a reader raise; reported as CheckpointError naming the file
_UNREADABLE = (ValueError, OverflowError, TypeError, RecursionError, MemoryError, struct.error, zipfile.BadZipFile,
               EOFError, zlib.error, IndexError)


class _CallerError(ValueError):
    """A bad argument (not a bad file): passed through unchanged."""


class WeightsInfo(NamedTuple):
    """What :func:`inspect_weights` finds in a file.

    Attributes:
        format: the format's description (a value of :data:`~minires.io.sniff.FORMATS`).
        tensors: ``{name: TensorInfo(shape, dtype)}`` of the state dict, in file order.
        nested_key: the top-level entry holding the state dict (``None``: the top level).
        extras: the other top-level entries of a checkpoint, as short strings
            (``{'best_prec1': '91.73', 'epoch': '200'}``).
    """

    format: str
    tensors: dict
    nested_key: str | None
    extras: dict


def _extension(path) -> str:
    return os.path.splitext(os.fspath(path))[1].lower()


def _read(source: str, key: str | None, limits: ReadLimits, arrays: bool):
    """``(format id, state dict, nested key, top-level object or None)``; arrays or TensorInfo values."""
    kind = require_format(source)
    if kind in ("npz", "safetensors"):
        if key is not None:
            raise _CallerError(f"key={key!r} only applies to PyTorch checkpoints, not {FORMATS[kind]} files")
        if kind == "npz":
            state = read_npz(source, limits) if arrays else \
                {k: TensorInfo(tuple(s), d.name) for k, (s, d) in describe_npz(source, limits).items()}
        else:
            state = read_safetensors(source, limits=limits) if arrays else \
                {k: TensorInfo(s, t) for k, (t, s) in describe_safetensors(source).items()}
        return kind, state, None, None
    budget = limits.budget(source)
    handle, checkpoint = open_torch_checkpoint(source, source, limits, budget, kind)
    with handle:
        lazy, nested = extract_state_dict(checkpoint.obj, source, key, LazyTensor)
        if arrays:
            return kind, checkpoint.materialise(budget, lazy), nested, checkpoint.obj
        return kind, checkpoint.describe(lazy), nested, checkpoint.obj


def _guarded_read(path, key, limits, arrays):
    source = os.fspath(path)
    try:
        return _read(source, key, limits or DEFAULT_LIMITS, arrays)
    except (CheckpointError, _CallerError):
        raise
    except _UNREADABLE as exc:
        raise CheckpointError(f"{source!r}: unreadable ({type(exc).__name__}: {exc})") from None


def load_state_dict(path: str | os.PathLike, key: str | None = None,
                    limits: ReadLimits | None = None) -> dict[str, np.ndarray]:
    """Read a state dict from a PyTorch checkpoint, ``.safetensors`` or ``.npz``, whatever its extension.

    PyTorch checkpoints (the zip format and the legacy pre-1.6 stream, including the
    pre-1.0 ``_rebuild_tensor``) need no PyTorch: a restricted unpickler rebuilds tensors
    as NumPy arrays. A checkpoint that nests the weights (``{"state_dict": ..., "epoch": 3}``)
    is unwrapped when exactly one of :data:`NESTED_STATE_KEYS` holds them, or by ``key``;
    only that part's tensors are read.

    Args:
        path: the weight file; the format is told from its bytes (the extension is a hint).
        key: for PyTorch checkpoints holding a dict of several things, the top-level entry
            that is the state dict.
        limits: resource caps (:class:`ReadLimits`); raise ``max_bytes`` for files whose
            tensors genuinely need more than four times the file's size.

    Returns:
        ``{name: numpy array}``, e.g. ``{"conv1.weight": float32 (64, 3, 7, 7), ...,
        "bn1.num_batches_tracked": int64 ()}``, ready for ``Module.load_state_dict``
        (after :func:`rename_keys` where the names differ).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: a PyTorch pickle names a global that tensors do not need.
        ResourceLimitError: the file asks for more memory than ``limits`` allow.
        CheckpointError: the file is corrupt, of no supported format, or holds no state
            dict (every message names the file and the problem).
        KeyError: ``key`` is not a top-level entry.
    """
    return _guarded_read(path, key, limits, arrays=True)[1]


def inspect_weights(path: str | os.PathLike, key: str | None = None,
                    limits: ReadLimits | None = None) -> WeightsInfo:
    """List a weight file's tensors (names, shapes, dtypes) without reading their data.

    Checks the file as :func:`load_state_dict` does (same arguments and errors).

    Returns:
        A :class:`WeightsInfo`.
    """
    kind, tensors, nested, top = _guarded_read(path, key, limits, arrays=False)
    extras = {}
    if nested is not None and isinstance(top, dict):
        extras = {str(k): _short_value(v) for k, v in top.items() if k != nested}
    return WeightsInfo(FORMATS[kind], tensors, nested, extras)


def _short_value(value) -> str:
    if isinstance(value, (dict, list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return "tensor" if isinstance(value, LazyTensor) else short_repr(value)


def _to_numpy_state(state) -> dict[str, np.ndarray]:
    if hasattr(state, "state_dict") and callable(state.state_dict):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise TypeError(f"save_state_dict expects a dict of arrays or a Module, got {type(state).__name__}")
    out = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f"state dict keys must be str, got {name!r} ({type(name).__name__})")
        out[name] = backend.as_numpy(value.data if hasattr(value, "data") and not isinstance(value, np.ndarray)
                                     else value)
        if out[name].dtype == object:
            raise TypeError(f"entry {name!r} is not numeric (dtype object)")
    return out


def save_state_dict(state, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as ``.npz`` or ``.safetensors``, chosen by ``path``'s extension.

    Args:
        state: ``{name: array}`` (NumPy or CuPy arrays or minires Tensors), or a Module
            (its ``state_dict()`` is written).
        path: the output file (overwritten).
        metadata: string-to-string notes stored in a ``.safetensors`` header (ignored
            by ``.npz``, which has no place for it: passing it raises ValueError).

    Raises:
        ValueError: the extension is not ``.npz`` or ``.safetensors``.
        TypeError: a key is not a string or a value is not numeric.
    """
    target = os.fspath(path)
    ext = _extension(target)
    if ext not in WRITE_FORMATS:
        raise ValueError(f"cannot write {target!r}: unknown extension {ext or '(none)'!r}; "
                         f"expected one of {', '.join(WRITE_FORMATS)}")
    arrays = _to_numpy_state(state)
    if ext == ".npz":
        if metadata:
            raise ValueError(".npz files have no place for metadata; use .safetensors")
        write_npz(arrays, target)
    else:
        write_safetensors(arrays, target, metadata=metadata)


__all__ = [
    "load_state_dict", "inspect_weights", "save_state_dict", "rename_keys", "guess_renames", "sniff_format",
    "read_npz", "write_npz", "read_safetensors", "write_safetensors", "read_torch_checkpoint",
    "RestrictedUnpickler", "ALLOWED_GLOBALS", "CheckpointError", "UnsafeCheckpointError", "ResourceLimitError",
    "ReadLimits", "TensorInfo", "WeightsInfo", "READ_FORMATS", "WRITE_FORMATS", "NESTED_STATE_KEYS", "FORMATS",
]
