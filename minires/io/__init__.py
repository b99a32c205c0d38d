"""Weight import and export: ``.npz``, ``.safetensors`` and PyTorch ``.pth`` without PyTorch.

Example:
    >>> import minires.io
    >>> from minires.models import resnet50
    >>> model = resnet50()
    >>> model.load_state_dict(minires.io.load_state_dict("resnet50-0676ba61.pth"))  # doctest: +SKIP
    >>> minires.io.save_state_dict(model, "resnet50.safetensors")  # doctest: +SKIP

Readers never execute code from a file: ``.npz`` is read with ``allow_pickle=False``,
``.safetensors`` by a JSON-header parser written here, and PyTorch checkpoints through
:class:`~minires.io.torch_pickle.RestrictedUnpickler`, which resolves only the globals that
rebuilding tensors needs and raises :class:`UnsafeCheckpointError` for any other.
"""

from __future__ import annotations

import os

import numpy as np

from .. import backend
from .errors import CheckpointError, UnsafeCheckpointError
from .npz import read_npz, write_npz
from .safetensors import read_safetensors, write_safetensors
from .torch_pickle import ALLOWED_GLOBALS, RestrictedUnpickler, read_torch_checkpoint

READ_FORMATS = {".npz": "NumPy archive", ".safetensors": "safetensors", ".pth": "PyTorch checkpoint",
                ".pt": "PyTorch checkpoint", ".bin": "PyTorch checkpoint", ".ckpt": "PyTorch checkpoint"}
WRITE_FORMATS = {".npz": "NumPy archive", ".safetensors": "safetensors"}

#: keys under which training scripts commonly nest the model's state dict
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")


def _extension(path) -> str:
    return os.path.splitext(os.fspath(path))[1].lower()


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())


def _extract_state_dict(obj, source: str, key: str | None) -> dict[str, np.ndarray]:
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            found = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise KeyError(f"{source!r} has no entry {key!r} at its top level (found: {found})")
        obj = obj[key]
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, dict) and key is None:
        nested = [k for k in NESTED_STATE_KEYS if k in obj and _is_state_dict(obj[k])]
        if len(nested) == 1:
            return dict(obj[nested[0]])
        keys = sorted(map(str, obj))[:20]
        bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)][:5]
        raise CheckpointError(f"{source!r} is not a flat {{name: tensor}} state dict (top-level keys {keys}; "
                              f"non-tensor entries {bad}); pass key=... to pick the nested state dict")
    raise CheckpointError(f"{source!r} holds a {type(obj).__name__}, expected a {{name: tensor}} state dict")


def load_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, np.ndarray]:
    """Read a state dict from ``.npz``, ``.safetensors`` or a PyTorch ``.pth``/``.pt``/``.bin``/``.ckpt``.

    PyTorch checkpoints need no PyTorch: a restricted unpickler rebuilds tensors as NumPy
    arrays. A checkpoint that nests the weights (``{"state_dict": ..., "epoch": 3}``) is
    unwrapped when exactly one of :data:`NESTED_STATE_KEYS` holds them, or by ``key``.

    Args:
        path: the weight file; the format is chosen by its extension.
        key: for PyTorch checkpoints holding a dict of several things, the top-level entry
            that is the state dict.

    Returns:
        ``{name: numpy array}``, e.g. ``{"conv1.weight": float32 (64, 3, 7, 7), ...,
        "bn1.num_batches_tracked": int64 ()}``, ready for ``Module.load_state_dict``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the extension is not one of :data:`READ_FORMATS`.
        UnsafeCheckpointError: a PyTorch pickle names a global that tensors do not need.
        CheckpointError: the file is corrupt or does not hold a state dict.
    """
    source = os.fspath(path)
    ext = _extension(source)
    if ext not in READ_FORMATS:
        raise ValueError(f"cannot read {source!r}: unknown extension {ext or '(none)'!r}; "
                         f"expected one of {', '.join(READ_FORMATS)}")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no such weight file: {source!r}")
    if ext == ".npz":
        state = read_npz(source)
    elif ext == ".safetensors":
        state = read_safetensors(source)
    else:
        return _extract_state_dict(read_torch_checkpoint(source), source, key)
    if key is not None:
        raise ValueError(f"key={key!r} only applies to PyTorch checkpoints, not {ext} files")
    return state


def _to_numpy_state(state) -> dict[str, np.ndarray]:
    if hasattr(state, "state_dict") and callable(state.state_dict):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise TypeError(f"save_state_dict expects a dict of arrays or a Module, got {type(state).__name__}")
    out = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f"state dict keys must be str, got {name!r} ({type(name).__name__})")
        array = value.data if hasattr(value, "data") and not isinstance(value, np.ndarray) else value
        out[name] = np.asarray(backend.as_numpy(array) if backend.is_cupy_array(array) else array)
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
    "load_state_dict", "save_state_dict", "read_npz", "write_npz", "read_safetensors", "write_safetensors",
    "read_torch_checkpoint", "RestrictedUnpickler", "ALLOWED_GLOBALS", "CheckpointError",
    "UnsafeCheckpointError", "READ_FORMATS", "WRITE_FORMATS", "NESTED_STATE_KEYS",
]
