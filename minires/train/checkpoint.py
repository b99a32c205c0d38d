"""Pickle-free, atomic checkpoints: NumPy arrays plus JSON stored as ``uint8`` bytes.

A checkpoint is one ``.npz`` file read with ``allow_pickle=False``. Arrays are stored
under their names; everything else (positions, RNG states, configuration, the
structure of nested optimizer states) is JSON, kept in the array ``__meta__`` as UTF-8
bytes. :func:`flatten_state` turns any nesting of dicts, lists, tuples, numbers, strings
and arrays into (JSON, arrays) and :func:`unflatten_state` inverts it exactly (dict keys
keep their type, so ``{0: ...}`` comes back with an int key).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import zipfile
import zlib

import numpy as np

from ..backend import as_numpy, is_cupy_array

META_KEY = "__meta__"


def flatten_state(obj, arrays: dict, prefix: str):
    """Replace the arrays inside ``obj`` by references, collecting them in ``arrays``.

    Args:
        obj: nested dicts / lists / tuples / scalars / strings / None / NumPy or CuPy arrays.
        arrays: output dict, filled with ``prefix + '/' + index`` -> host array.
        prefix: key prefix for this object's arrays.

    Returns:
        A JSON-serialisable description of ``obj``.
    """
    if isinstance(obj, np.ndarray) or is_cupy_array(obj):
        key = f"{prefix}/{len(arrays)}"
        arrays[key] = as_numpy(obj)
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return {"__scalar__": obj.item(), "dtype": obj.dtype.str}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten_state(k, arrays, prefix), flatten_state(v, arrays, prefix)]
                             for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, arrays, prefix) for v in obj]}
    if isinstance(obj, list):
        return [flatten_state(v, arrays, prefix) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):  # JSON has no NaN or infinity
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (expected arrays, numbers, strings, "
                    "dicts, lists, tuples)")


def unflatten_state(desc, arrays):
    """Invert :func:`flatten_state`; ``arrays`` maps the stored keys to arrays."""
    if isinstance(desc, list):
        return [unflatten_state(v, arrays) for v in desc]
    if isinstance(desc, dict):
        if "__array__" in desc:
            return np.array(arrays[desc["__array__"]])
        if "__scalar__" in desc:
            return np.dtype(desc["dtype"]).type(desc["__scalar__"])
        if "__dict__" in desc:
            return {_hashable(unflatten_state(k, arrays)): unflatten_state(v, arrays) for k, v in desc["__dict__"]}
        if "__tuple__" in desc:
            return tuple(unflatten_state(v, arrays) for v in desc["__tuple__"])
        if "__float__" in desc:
            return float(desc["__float__"])
        raise ValueError(f"unknown checkpoint entry {sorted(desc)}")
    return desc


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):  # (not every file system can sync a folder)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path, write) -> None:
    """Write a file atomically: ``write(fileobj)`` into a temporary file, fsync, rename.

    A reader (or a process killed at any moment) sees either the old file or the new
    complete one, never a partial file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions of a new file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(folder)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(path, arrays: dict, meta: dict) -> None:
    """Atomically write ``arrays`` (name -> array) and JSON ``meta`` to an ``.npz`` file."""
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved")
    payload = {k: as_numpy(v) for k, v in arrays.items()}
    payload[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **payload))


# what a truncated or otherwise damaged .npz raises while it is opened or read
_DAMAGED = (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, zipfile.BadZipFile, zlib.error)


def _read_npz_entries(path, meta_only: bool) -> dict:
    try:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            names = [META_KEY] if meta_only and META_KEY in f.files else f.files
            return {k: f[k] for k in names}
    except _DAMAGED as exc:  # a .npy instead of an .npz fails at `with` (no context manager)
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None


def load_checkpoint(path) -> tuple[dict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``(arrays, meta)``.

    Raises:
        ValueError: the file is damaged (truncated, not a zip archive) or not a minires
            checkpoint; the message names it.
    """
    arrays = _read_npz_entries(path, meta_only=False)
    return arrays, _pop_meta(arrays, path)


def read_checkpoint_meta(path) -> dict:
    """Only the JSON part of a checkpoint (position, configuration), without reading its arrays.

    Raises:
        ValueError: as :func:`load_checkpoint`.
    """
    return _pop_meta(_read_npz_entries(path, meta_only=True), path)


def _pop_meta(arrays: dict, path) -> dict:
    if META_KEY not in arrays:
        raise ValueError(f"{path}: not a minires checkpoint (no {META_KEY} entry)")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: damaged checkpoint metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: damaged checkpoint metadata (a JSON {type(meta).__name__})")
    return meta
