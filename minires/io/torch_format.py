"""Read PyTorch checkpoints (``torch.save`` output) without PyTorch.

Two container formats are understood:

- the zip format (PyTorch >= 1.6 default): ``<archive>/data.pkl`` holds the object graph,
  each tensor storage lives in its own record ``<archive>/data/<key>``, and
  ``<archive>/byteorder`` says ``little`` or ``big``;
- the legacy stream (PyTorch < 1.6, or ``_use_new_zipfile_serialization=False``): five
  pickles in a row (magic number, protocol version, system info, the object graph, the
  storage keys) followed by each storage as an int64 element count and its raw bytes.

The pickles go through :mod:`minires.io.torch_pickle` (tensor metadata only). Every
storage's size is checked against the bytes the file holds before anything is read, and
every copy made from the data is charged to a :class:`~minires.io.limits.ByteBudget`.
"""

from __future__ import annotations

import collections
import io
import os
import struct
from typing import NamedTuple

import numpy as np

from .errors import CheckpointError, UnsafeCheckpointError, short_repr
from .limits import DEFAULT_LIMITS, ReadLimits, over_limit
from .safetensors import bfloat16_bits_to_float32
from .sniff import is_torch_pickle_record, require_format
from .torch_pickle import BF16, LazyTensor, Storage, StorageType, dtype_name, itemsize, safe_unpickle
from .zip_records import open_zip, read_record

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class TensorInfo(NamedTuple):
    """A tensor's shape and dtype, as a file declares it (``dtype`` is a name: ``'float32'``, ``'bfloat16'``)."""

    shape: tuple
    dtype: str


def _storage_from_pid(pid, source, legacy):
    if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
        kind = pid[0] if isinstance(pid, tuple) and pid else pid
        if kind in ("module", b"module"):
            raise UnsafeCheckpointError(f"refusing to load {source!r}: it pickles a whole module "
                                        "(class source); save model.state_dict() instead")
        raise CheckpointError(f"{source!r}: unknown persistent id {short_repr(pid)}")
    expected = 6 if legacy else 5
    if len(pid) != expected:
        raise CheckpointError(f"{source!r}: storage id {short_repr(pid)} has {len(pid)} fields, expected {expected}")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, StorageType):
        raise CheckpointError(f"{source!r}: storage id names {short_repr(storage_type)}, not a storage type")
    if type(numel) is not int or numel < 0:
        raise CheckpointError(f"{source!r}: storage {short_repr(key)} has invalid element count {short_repr(numel)}")
    if not isinstance(key, (str, int)) or len(str(key)) > 64:
        raise CheckpointError(f"{source!r}: storage key {short_repr(key)} is not a short name")
    return str(key), storage_type.dtype, numel, (pid[5] if legacy else None)


def _raw_dtype(dtype, byteorder):
    base = np.dtype(np.uint16 if dtype == BF16 else dtype)
    return base.newbyteorder("<" if byteorder == "little" else ">")


def _to_native(array, dtype):
    if dtype == BF16:
        return bfloat16_bits_to_float32(array.astype(np.uint16))
    if np.dtype(dtype) == np.bool_:
        return array.view(np.uint8) != 0
    return array.astype(np.dtype(dtype), copy=True)


def _native_nbytes(tensor: LazyTensor) -> int:
    return tensor.numel * (4 if tensor.dtype == BF16 else np.dtype(tensor.dtype).itemsize)


def tensor_from_storage(tensor: LazyTensor, flat: np.ndarray, byteorder: str) -> np.ndarray:
    """Copy ``tensor``'s view out of its storage ``flat`` (raw, file byte order) into a native array."""
    base = tensor.storage.offset + tensor.storage_offset
    if tensor.dtype != tensor.storage.dtype:  # v3: untyped bytes reinterpreted as a dtype
        raw_dtype = _raw_dtype(tensor.dtype, byteorder)
        flat = flat.view(np.uint8)
        flat = flat[: flat.size // raw_dtype.itemsize * raw_dtype.itemsize].view(raw_dtype)
    if tensor.numel == 0:
        return _to_native(np.empty(tensor.size, dtype=flat.dtype), tensor.dtype)
    view = np.lib.stride_tricks.as_strided(flat[base:], shape=tensor.size,
                                           strides=tuple(s * flat.itemsize for s in tensor.stride))
    return _to_native(view, tensor.dtype)


class _Walker:
    """Replaces every :class:`LazyTensor` of an object graph, sharing what the pickle shares.

    Each object is converted once (a pickle's memo can make one list appear exponentially
    often), nesting deeper than ``max_depth`` or a cycle is refused.
    """

    def __init__(self, convert, source, max_depth):
        self.convert, self.source, self.max_depth = convert, source, max_depth
        self.done, self.active = {}, set()

    def __call__(self, obj, depth=0):
        if isinstance(obj, (str, bytes, int, float, complex, bool, type(None))):
            return obj
        key = id(obj)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            raise CheckpointError(f"{self.source!r}: object graph is cyclic (a container holds itself)")
        if depth > self.max_depth:
            raise over_limit(self.source, "the nesting depth of the checkpoint", depth, self.max_depth, "max_depth")
        self.active.add(key)
        result = self._convert(obj, depth)
        self.active.discard(key)
        self.done[key] = result
        return result

    def _convert(self, obj, depth):
        if isinstance(obj, LazyTensor):
            return self.convert(obj)
        if isinstance(obj, dict):
            out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
            for k, v in obj.items():
                out[k] = self(v, depth + 1)
            return out
        if isinstance(obj, (list, tuple)):
            items = [self(v, depth + 1) for v in obj]
            return items if isinstance(obj, list) else tuple(items)
        if isinstance(obj, (set, frozenset)):
            return type(obj)(self(v, depth + 1) for v in obj)
        raise CheckpointError(f"{self.source!r}: holds a bare {type(obj).__name__}, not a tensor")


class _Checkpoint:
    """An unpickled object graph and a way to fetch its storages' bytes."""

    def __init__(self, obj, source, limits, byteorder, read_storage):
        """``read_storage(key)`` returns a storage's raw bytes (checked against its declared size)."""
        self.obj, self.source, self.limits, self.byteorder = obj, source, limits, byteorder
        self.read_storage = read_storage

    def describe(self, obj=None):
        """``obj`` (default: the whole graph) with each tensor replaced by its :class:`TensorInfo` (no data read)."""
        walk = _Walker(lambda t: TensorInfo(t.size, dtype_name(t.dtype)), self.source, self.limits.max_depth)
        return walk(self.obj if obj is None else obj)

    def materialise(self, budget, obj=None):
        """``obj`` (default: the whole graph) with each tensor replaced by a NumPy array (copied, native order)."""
        raw = {}

        def convert(tensor):
            budget.charge(_native_nbytes(tensor), f"tensor of size {tensor.size}")
            storage = tensor.storage
            if storage.key not in raw:
                raw[storage.key] = self.read_storage(storage.key)
            flat = np.frombuffer(raw[storage.key], dtype=_raw_dtype(storage.dtype, self.byteorder))
            return tensor_from_storage(tensor, flat, self.byteorder)

        return _Walker(convert, self.source, self.limits.max_depth)(self.obj if obj is None else obj)


def _read_pickle_record(archive, info, source, limits, budget):
    if info.file_size > limits.max_pickle_bytes:
        raise over_limit(source, f"the pickle {info.filename!r} size", info.file_size, limits.max_pickle_bytes,
                         "max_pickle_bytes")
    return read_record(archive, info, info.file_size, source, budget)


def _zip_byteorder(archive, names, prefix, source, budget):
    if prefix + "byteorder" not in names:
        return "little"
    raw = read_record(archive, names[prefix + "byteorder"], None, source, budget, max_size=16)
    byteorder = raw.decode("ascii", "replace").strip()
    if byteorder not in ("little", "big"):
        raise CheckpointError(f"{source!r}: unknown byteorder record {short_repr(byteorder)}")
    return byteorder


def _zip_persistent_load(names, prefix, source):
    def persistent_load(pid):
        key, dtype, numel, _ = _storage_from_pid(pid, source, legacy=False)
        record = f"{prefix}data/{key}"
        if record not in names:
            raise CheckpointError(f"{source!r}: storage record {record!r} is missing")
        stored = names[record].file_size
        if stored != numel * itemsize(dtype):
            raise CheckpointError(f"{source!r}: storage {key!r} has {stored} bytes, expected {numel} x {itemsize(dtype)}")
        return Storage(key, dtype, numel)
    return persistent_load


def _open_zip_checkpoint(path, source, limits, budget):
    archive = open_zip(path, source)
    try:
        names = {info.filename: info for info in archive.infolist()}
        pickles = [n for n in names if is_torch_pickle_record(n)]
        if len(pickles) != 1:
            raise CheckpointError(f"{source!r} is a zip archive but not a torch.save checkpoint "
                                  f"(expected one '<name>/data.pkl', found {len(pickles)})")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = _zip_byteorder(archive, names, prefix, source, budget)
        pickle_bytes = _read_pickle_record(archive, names[pickles[0]], source, limits, budget)
        obj = safe_unpickle(io.BytesIO(pickle_bytes), source, limits, _zip_persistent_load(names, prefix, source))
    except BaseException:
        archive.close()
        raise

    def read_storage(key):
        info = names[f"{prefix}data/{key}"]
        return read_record(archive, info, info.file_size, source, budget)

    return archive, _Checkpoint(obj, source, limits, byteorder, read_storage)


def _legacy_header(stream, source, limits):
    magic = safe_unpickle(stream, source, limits)
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(f"{source!r} is neither a zip checkpoint nor a legacy torch.save stream "
                              "(bad magic number)")
    version = safe_unpickle(stream, source, limits)
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"{source!r}: unsupported legacy protocol version {short_repr(version)}")
    sys_info = safe_unpickle(stream, source, limits)
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    return "little" if little else "big"


def _legacy_persistent_load(source, roots):
    def persistent_load(pid):
        key, dtype, numel, view = _storage_from_pid(pid, source, legacy=True)
        if roots.setdefault(key, (dtype, numel)) != (dtype, numel):
            raise CheckpointError(f"{source!r}: storage {key!r} is claimed with two different sizes or dtypes")
        if view is None:
            return Storage(key, dtype, numel)
        if not (isinstance(view, tuple) and len(view) == 3 and all(type(v) is int and v >= 0 for v in view[1:])):
            raise CheckpointError(f"{source!r}: malformed storage view {short_repr(view)}")
        if view[1] + view[2] > numel:
            raise CheckpointError(f"{source!r}: storage view {short_repr(view)} reaches past its storage of {numel} "
                                  "elements")
        return Storage(key, dtype, view[2], offset=view[1])
    return persistent_load


def _legacy_storage_offsets(f, data_start, file_size, keys, roots, byteorder, source):
    """File offset of each storage's bytes, after checking its count against the file's size."""
    offsets, position = {}, data_start
    for key in keys:
        key = str(key)
        if key not in roots or key in offsets:
            raise CheckpointError(f"{source!r}: storage {short_repr(key)} listed twice or never referenced")
        dtype, numel = roots[key]
        f.seek(position)
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{source!r}: truncated before storage {key!r}")
        (count,) = struct.unpack("<q" if byteorder == "little" else ">q", head)
        if count != numel:
            raise CheckpointError(f"{source!r}: storage {key!r} holds {count} elements, expected {numel}")
        nbytes = numel * itemsize(dtype)
        if position + 8 + nbytes > file_size:
            raise CheckpointError(f"{source!r}: storage {key!r} of {nbytes:,} bytes is truncated (the file ends "
                                  f"{position + 8 + nbytes - file_size:,} bytes too early)")
        offsets[key] = position + 8
        position += 8 + nbytes
    missing = set(roots) - set(offsets)
    if missing:
        raise CheckpointError(f"{source!r}: storages {short_repr(sorted(missing))} are referenced but not stored")
    return offsets


def _open_legacy_checkpoint(path, source, limits):
    file_size = os.path.getsize(path)
    f = open(path, "rb")
    try:
        stream = io.BytesIO(f.read(min(file_size, limits.max_pickle_bytes)))
        byteorder = _legacy_header(stream, source, limits)
        roots = {}
        obj = safe_unpickle(stream, source, limits, _legacy_persistent_load(source, roots))
        keys = safe_unpickle(stream, source, limits)
        if not isinstance(keys, list):
            raise CheckpointError(f"{source!r}: storage key list missing")
        offsets = _legacy_storage_offsets(f, stream.tell(), file_size, keys, roots, byteorder, source)
    except BaseException:
        f.close()
        raise

    def read_storage(key):
        dtype, numel = roots[key]
        f.seek(offsets[key])
        return f.read(numel * itemsize(dtype))

    return f, _Checkpoint(obj, source, limits, byteorder, read_storage)


def open_torch_checkpoint(path, source, limits, budget, kind):
    """Unpickle a checkpoint's object graph (no tensor data read yet).

    Args:
        kind: ``'torch-zip'`` or ``'torch-legacy'`` (see :func:`minires.io.sniff.sniff_format`).

    Returns:
        ``(handle, checkpoint)``: close ``handle`` when done with ``checkpoint``.
    """
    if kind == "torch-zip":
        return _open_zip_checkpoint(path, source, limits, budget)
    return _open_legacy_checkpoint(path, source, limits)


def read_torch_checkpoint(path: str | os.PathLike, limits: ReadLimits | None = None):
    """Load a ``torch.save`` file into plain Python containers and NumPy arrays, without torch.

    Args:
        path: a checkpoint in the zip or the legacy (pre-1.6) format, any extension.
        limits: resource caps (:class:`~minires.io.ReadLimits`; default ``ReadLimits()``).

    Returns:
        The saved object with every tensor replaced by a NumPy array (copied, native byte
        order; bfloat16 widened to float32). Dicts, lists, tuples and scalars pass through.

    Raises:
        UnsafeCheckpointError: the pickle names a global outside :data:`ALLOWED_GLOBALS`.
        ResourceLimitError: the file asks for more than ``limits`` allow.
        CheckpointError: the file is corrupt, truncated, or not a PyTorch checkpoint.
    """
    source = os.fspath(path)
    kind = require_format(source, ("torch-zip", "torch-legacy"))
    limits = limits or DEFAULT_LIMITS
    budget = limits.budget(source)
    handle, checkpoint = open_torch_checkpoint(source, source, limits, budget, kind)
    with handle:
        return checkpoint.materialise(budget)


__all__ = ["read_torch_checkpoint", "open_torch_checkpoint", "TensorInfo",
           "LEGACY_MAGIC_NUMBER", "LEGACY_PROTOCOL_VERSION"]
