"""Writing PyTorch checkpoint files without torch: handmade pickles and the legacy stream format.

``write_legacy_state`` writes a state dict the way PyTorch 0.3 did (``torch._utils._rebuild_tensor``,
storages named ``torch.FloatStorage`` or, for GPU-trained weights, ``torch.cuda.FloatStorage``),
so published pre-1.0 checkpoints can be reproduced in tests that have no torch.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage", np.dtype(np.bool_): "BoolStorage"}


def write_zip_checkpoint(path, pickle_bytes, records=None, prefix="archive", compression=zipfile.ZIP_STORED):
    """A torch.save zip archive with the given ``data.pkl`` and ``{name: bytes}`` records."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr(f"{prefix}/data.pkl", pickle_bytes)
        z.writestr(f"{prefix}/version", "3\n")
        for name, data in (records or {}).items():
            z.writestr(f"{prefix}/{name}", data)


def legacy_header(protocol=2):
    """The first three pickles of a legacy torch.save stream (magic, protocol version, system info)."""
    return b"".join(pickle.dumps(v, protocol=protocol) for v in
                    (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                          "type_sizes": {"short": 2, "int": 4, "long": 4}}))


def write_legacy_checkpoint(path, pickle_bytes, keys=(), storages=b""):
    """A legacy stream around a handmade object pickle: header, the pickle, the key list, raw storages."""
    path.write_bytes(legacy_header() + pickle_bytes + pickle.dumps(list(keys), protocol=2) + storages)


def unicode_op(s):
    data = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def global_op(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def int_op(v):
    return pickle.BININT + struct.pack("<i", v)


def int_tuple_op(values):
    return pickle.MARK + b"".join(pickle.LONG1 + bytes([len(b)]) + b for b in
                                  (v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True) for v in values)) \
        + pickle.TUPLE


def handmade_tensor_pickle(numel=4, size=(2, 2), stride=(2, 1), offset=0, build_state=False):
    """The opcodes torch.save emits for one float32 tensor ``{"w": tensor}``, written by hand (no torch needed)."""
    out = pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + unicode_op("w")
    out += global_op("torch._utils", "_rebuild_tensor_v2") + pickle.MARK
    out += (pickle.MARK + unicode_op("storage") + global_op("torch", "FloatStorage") + unicode_op("0")
            + unicode_op("cpu") + int_tuple_op((numel,))[1:-1] + pickle.TUPLE + pickle.BINPERSID)
    out += int_tuple_op((offset,))[1:-1] + int_tuple_op(size) + int_tuple_op(stride)
    out += pickle.NEWFALSE + global_op("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    out += pickle.TUPLE + pickle.REDUCE
    if build_state:
        out += pickle.EMPTY_DICT + unicode_op("storage") + pickle.NONE + pickle.SETITEM + pickle.BUILD
    return out + pickle.SETITEM + pickle.STOP


class _Global:
    """A global written by name (``torch`` need not exist where the file is written)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # only so that the pickler accepts it as a reduce function
        raise TypeError("a stand-in for a global, never called")


class _StorageRef:
    def __init__(self, key, array, storage_module, location):
        self.key, self.array, self.storage_module, self.location = key, array, storage_module, location


class _LegacyPickler(pickle._Pickler):
    """Pickles NumPy arrays as PyTorch 0.3 pickled tensors: ``_rebuild_tensor(storage, offset, size, stride)``."""

    def __init__(self, file, storage_module, location, rebuild):
        super().__init__(file, protocol=2)
        self.storages, self.storage_module, self.location, self.rebuild = [], storage_module, location, rebuild

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            name = _STORAGE_NAMES[obj.array.dtype]
            return ("storage", _Global(obj.storage_module, name), obj.key, obj.location, obj.array.size, None)
        return None

    def reducer_override(self, obj):
        if not isinstance(obj, np.ndarray):
            return NotImplemented
        array = np.array(obj, order="C", copy=True)  # (ascontiguousarray would make 0-d arrays 1-d)
        ref = _StorageRef(str(len(self.storages)), array, self.storage_module, self.location)
        self.storages.append(ref)
        strides = tuple(s // array.itemsize for s in array.strides) if array.ndim else ()
        args = (ref, 0, tuple(array.shape), strides)
        if self.rebuild == "_rebuild_tensor_v2":
            args += (False, collections.OrderedDict())
        return _Global("torch._utils", self.rebuild), args

    def _save_global_marker(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[_Global] = _save_global_marker


def write_legacy_state(path, obj, storage_module="torch", location="cpu", rebuild="_rebuild_tensor"):
    """Write ``obj`` (NumPy arrays inside dicts/lists) as a legacy torch.save stream, PyTorch 0.3 style."""
    buffer = io.BytesIO()
    pickler = _LegacyPickler(buffer, storage_module, location, rebuild)
    pickler.dump(obj)
    raw = b"".join(struct.pack("<q", ref.array.size) + ref.array.astype(ref.array.dtype.newbyteorder("<")).tobytes()
                   for ref in pickler.storages)
    keys = [ref.key for ref in pickler.storages]
    path.write_bytes(legacy_header() + buffer.getvalue() + pickle.dumps(keys, protocol=2) + raw)


def akamaster_state(state):
    """A minires CIFAR ResNet state dict as akamaster's repository published it: DataParallel's ``module.``
    prefix, the classifier called ``linear``, no ``num_batches_tracked`` (PyTorch 0.3)."""
    out = collections.OrderedDict()
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        name = "linear." + name[len("fc."):] if name.startswith("fc.") else name
        out["module." + name] = np.asarray(value)
    return out
