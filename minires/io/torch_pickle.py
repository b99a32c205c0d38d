"""Read PyTorch checkpoints (``torch.save`` output) without PyTorch, through a restricted unpickler.

Two container formats are understood:

- the zip format (PyTorch >= 1.6 default): ``<archive>/data.pkl`` holds the object graph,
  each tensor storage lives in its own record ``<archive>/data/<key>``, and
  ``<archive>/byteorder`` says ``little`` or ``big``;
- the legacy stream (``_use_new_zipfile_serialization=False``): five pickles in a row
  (magic number, protocol version, system info, the object graph, the storage keys)
  followed by each storage as an int64 element count and its raw bytes.

The pickle may name only the globals that rebuilding tensors needs
(:data:`ALLOWED_GLOBALS`): ``torch._utils._rebuild_tensor_v2`` / ``_v3`` /
``_rebuild_parameter``, the ``torch.*Storage`` types, ``torch`` dtypes and
``collections.OrderedDict``. Each one resolves to a small stand-in defined here, never to the
real object, so ``torch`` is not imported. Any other global (``os.system``,
``builtins.eval``, ...) raises :class:`~minires.io.errors.UnsafeCheckpointError` before it is
looked up, so nothing is imported or called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from .errors import CheckpointError, UnsafeCheckpointError
from .safetensors import bfloat16_bits_to_float32

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name / dtype name -> NumPy dtype ("bfloat16" read as uint16 bits, widened later)
_BF16 = "bfloat16"
_STORAGE_TYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": _BF16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}
_TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64,
    "float16": np.float16, "half": np.float16, "bfloat16": _BF16, "int64": np.int64, "long": np.int64,
    "int32": np.int32, "int": np.int32, "int16": np.int16, "short": np.int16, "int8": np.int8,
    "uint8": np.uint8, "bool": np.bool_, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
}


class _Inert:
    """Base of the stand-ins: the pickle's BUILD opcode cannot set state on them."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafeCheckpointError(f"checkpoint tries to set state on a {type(self).__name__}; refusing")


class _StorageType(_Inert):
    """Stand-in for ``torch.FloatStorage`` and friends: only carries the element dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class _DType(_Inert):
    """Stand-in for a ``torch.<dtype>`` object (used by ``_rebuild_tensor_v3``)."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class _Storage(_Inert):
    """A flat storage: its key in the file, element dtype, element count and element offset."""

    __slots__ = ("key", "dtype", "numel", "offset")

    def __init__(self, key, dtype, numel, offset=0):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset


class _LazyTensor(_Inert):
    """A tensor to materialise once its storage bytes are available."""

    __slots__ = ("storage", "storage_offset", "size", "stride", "dtype")

    def __init__(self, storage, storage_offset, size, stride, dtype=None):
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"tensor rebuild got {type(storage).__name__} where a storage was expected")
        if not (isinstance(storage_offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
                and len(size) == len(stride) and all(isinstance(v, int) for v in size + stride)):
            raise CheckpointError(f"malformed tensor metadata: offset={storage_offset!r}, size={size!r}, "
                                  f"stride={stride!r}")
        if storage_offset < 0 or any(v < 0 for v in size + stride):
            raise CheckpointError(f"negative size, stride or offset in tensor metadata: offset={storage_offset}, "
                                  f"size={size}, stride={stride}")
        self.storage, self.storage_offset, self.size, self.stride = storage, storage_offset, size, stride
        self.dtype = storage.dtype if dtype is None else dtype


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    if not isinstance(dtype, _DType):
        raise CheckpointError(f"_rebuild_tensor_v3 expects a torch dtype, got {type(dtype).__name__}")
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride), dtype=dtype.dtype)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    return data


#: (module, name) pairs a checkpoint's pickle may reference, and what each resolves to.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_TYPES.items()},
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.uint8),
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
                f"'{module}.{name}', which tensor storage does not need (nothing was imported or run; "
                f"allowed globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2/_v3, "
                f"torch._utils._rebuild_parameter, torch.*Storage, torch dtypes)"
            ) from None

    def persistent_load(self, pid):  # noqa: D102  (pickle protocol hook)
        if self._persistent is None:
            raise CheckpointError(f"{self._source!r}: unexpected persistent id {pid!r} in this pickle")
        return self._persistent(pid)


def _safe_unpickle(file, source: str, persistent_load=None):
    try:
        return RestrictedUnpickler(file, source, persistent_load).load()
    except CheckpointError:
        raise
    except Exception as exc:  # malformed streams raise many types; report them uniformly
        raise CheckpointError(f"{source!r}: corrupt or unsupported pickle ({type(exc).__name__}: {exc})") from exc


def _storage_from_pid(pid, source, legacy):
    if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
        kind = pid[0] if isinstance(pid, tuple) and pid else pid
        if kind in ("module", b"module"):
            raise UnsafeCheckpointError(f"refusing to load {source!r}: it pickles a whole module "
                                        "(class source); save model.state_dict() instead")
        raise CheckpointError(f"{source!r}: unknown persistent id {pid!r}")
    expected = 6 if legacy else 5
    if len(pid) != expected:
        raise CheckpointError(f"{source!r}: storage id {pid!r} has {len(pid)} fields, expected {expected}")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, _StorageType):
        raise CheckpointError(f"{source!r}: storage id names {storage_type!r}, not a storage type")
    if not isinstance(numel, int) or numel < 0:
        raise CheckpointError(f"{source!r}: storage {key!r} has invalid element count {numel!r}")
    return str(key), storage_type.dtype, numel, (pid[5] if legacy else None)


def _raw_dtype(dtype, byteorder):
    base = np.dtype(np.uint16 if dtype == _BF16 else dtype)
    return base.newbyteorder("<" if byteorder == "little" else ">")


def _to_native(array, dtype):
    if dtype == _BF16:
        return bfloat16_bits_to_float32(array.astype(np.uint16))
    return array.astype(np.dtype(dtype), copy=False)


def _materialise(obj, storages, source, byteorder="little"):
    """Replace every _LazyTensor in a nested dict/list/tuple by a NumPy array (copied)."""
    if isinstance(obj, _LazyTensor):
        flat = storages[obj.storage.key]
        base = obj.storage.offset + obj.storage_offset
        if obj.dtype != obj.storage.dtype:  # v3: untyped bytes reinterpreted as a dtype
            flat = flat.view(_raw_dtype(obj.dtype, byteorder))
        numel = int(np.prod(obj.size, dtype=np.int64))
        if numel:
            if min(obj.size, default=0) < 0 or min(obj.stride, default=0) < 0 or base < 0:
                raise CheckpointError(f"{source!r}: negative size/stride/offset in tensor metadata")
            last = base + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
            if last >= flat.size:
                raise CheckpointError(f"{source!r}: tensor of size {obj.size} and stride {obj.stride} at offset "
                                      f"{base} reads past its storage of {flat.size} elements")
            view = np.lib.stride_tricks.as_strided(flat[base:], shape=obj.size,
                                                   strides=tuple(s * flat.itemsize for s in obj.stride))
        else:
            view = np.empty(obj.size, dtype=flat.dtype)
        return np.array(_to_native(view, obj.dtype), copy=True)
    if isinstance(obj, dict):
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialise(v, storages, source, byteorder)
        return out
    if isinstance(obj, list):
        return [_materialise(v, storages, source, byteorder) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v, storages, source, byteorder) for v in obj)
    if isinstance(obj, (_Storage, _StorageType, _DType)):
        raise CheckpointError(f"{source!r}: holds a bare {type(obj).__name__}, not a tensor")
    return obj


def _load_zip(path, source):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{source!r} is a zip archive but not a torch.save checkpoint "
                                  f"(expected one '<name>/data.pkl', found {len(pickles)})")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{source!r}: unknown byteorder record {byteorder!r}")
        storages: dict[str, np.ndarray] = {}

        def persistent_load(pid):
            key, dtype, numel, _ = _storage_from_pid(pid, source, legacy=False)
            if key not in storages:
                record = f"{prefix}data/{key}"
                try:
                    raw = archive.read(record)
                except KeyError:
                    raise CheckpointError(f"{source!r}: storage record {record!r} is missing") from None
                raw_dtype = _raw_dtype(dtype, byteorder)
                if len(raw) != numel * raw_dtype.itemsize:
                    raise CheckpointError(f"{source!r}: storage {key!r} has {len(raw)} bytes, expected "
                                          f"{numel} x {raw_dtype.itemsize}")
                storages[key] = np.frombuffer(raw, dtype=raw_dtype)
            return _Storage(key, dtype, numel)

        with archive.open(pickles[0]) as f:
            obj = _safe_unpickle(io.BytesIO(f.read()), source, persistent_load)
        return _materialise(obj, storages, source, byteorder)


def _load_legacy(f, source):
    magic = _safe_unpickle(f, source)
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(f"{source!r} is neither a zip checkpoint nor a legacy torch.save stream "
                              "(bad magic number)")
    version = _safe_unpickle(f, source)
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"{source!r}: unsupported legacy protocol version {version!r}")
    sys_info = _safe_unpickle(f, source)
    byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"
    roots: dict[str, tuple] = {}

    def persistent_load(pid):
        key, dtype, numel, view = _storage_from_pid(pid, source, legacy=True)
        roots.setdefault(key, (dtype, numel))
        if view is None:
            return _Storage(key, dtype, numel)
        if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) for v in view[1:])):
            raise CheckpointError(f"{source!r}: malformed storage view {view!r}")
        return _Storage(key, dtype, view[2], offset=view[1])

    obj = _safe_unpickle(f, source, persistent_load)
    keys = _safe_unpickle(f, source)
    if not isinstance(keys, list):
        raise CheckpointError(f"{source!r}: storage key list missing")
    storages = {}
    for key in keys:
        key = str(key)
        if key not in roots:
            raise CheckpointError(f"{source!r}: storage {key!r} listed but never referenced")
        dtype, numel = roots[key]
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{source!r}: truncated before storage {key!r}")
        (count,) = struct.unpack("<q" if byteorder == "little" else ">q", head)
        raw_dtype = _raw_dtype(dtype, byteorder)
        if count != numel:
            raise CheckpointError(f"{source!r}: storage {key!r} holds {count} elements, expected {numel}")
        raw = f.read(count * raw_dtype.itemsize)
        if len(raw) != count * raw_dtype.itemsize:
            raise CheckpointError(f"{source!r}: storage {key!r} is truncated")
        storages[key] = np.frombuffer(raw, dtype=raw_dtype)
    missing = set(roots) - set(storages)
    if missing:
        raise CheckpointError(f"{source!r}: storages {sorted(missing)} are referenced but not stored")
    return _materialise(obj, storages, source, byteorder)


def read_torch_checkpoint(path: str | os.PathLike):
    """Load a ``torch.save`` file into plain Python containers and NumPy arrays, without torch.

    Args:
        path: a ``.pth`` / ``.pt`` file in the zip or the legacy (pre-1.6) format.

    Returns:
        The saved object with every tensor replaced by a NumPy array (copied, native byte
        order; bfloat16 widened to float32). Dicts, lists, tuples and scalars pass through.

    Raises:
        UnsafeCheckpointError: the pickle names a global outside :data:`ALLOWED_GLOBALS`.
        CheckpointError: the file is corrupt, truncated, or in the old tar format.
    """
    source = os.fspath(path)
    try:
        return _read(source)
    except RecursionError:
        raise CheckpointError(f"{source!r}: object graph is cyclic or nested too deeply") from None


def _read(source):
    if zipfile.is_zipfile(source):
        try:
            return _load_zip(source, source)
        except zipfile.BadZipFile as exc:
            raise CheckpointError(f"{source!r}: corrupt zip archive ({exc})") from exc
    with open(source, "rb") as f:
        start = f.read(512)
        if len(start) >= 262 and start[257:262] == b"ustar":
            raise CheckpointError(f"{source!r} uses the pre-0.4 tar checkpoint format, which is not supported; "
                                  "re-save it with a recent torch.save")
        f.seek(0)
        return _load_legacy(f, source)
