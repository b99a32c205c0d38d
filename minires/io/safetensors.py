"""A dependency-free reader and writer of the ``.safetensors`` format.

Layout: an unsigned 64-bit little-endian header length ``N``, ``N`` bytes of UTF-8 JSON
``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}``
(offsets relative to the byte buffer that follows the header), then the raw little-endian
tensor bytes. Nothing in the file is executed; every offset and size is validated.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from .errors import CheckpointError

#: safetensors dtype tag -> NumPy dtype (little-endian); ``BF16`` is read as float32.
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_TAGS = {dtype.newbyteorder("="): tag for tag, dtype in DTYPES.items() if tag != "BF16"}

MAX_HEADER_BYTES = 100_000_000  # the format's own limit, guards against absurd allocations


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns (uint16) to float32 exactly (bfloat16 is the top half of float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _parse_header(path: str, raw: bytes, file_size: int) -> tuple[dict, dict]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path!r}: safetensors header is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path!r}: safetensors header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path!r}: '__metadata__' must be an object of strings")
    buffer_size = file_size
    for name, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise CheckpointError(f"{path!r}: entry {name!r} needs 'dtype', 'shape' and 'data_offsets', got {entry!r}")
        tag, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if tag not in DTYPES:
            raise CheckpointError(f"{path!r}: tensor {name!r} has unsupported dtype {tag!r} "
                                  f"(supported: {', '.join(DTYPES)})")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise CheckpointError(f"{path!r}: tensor {name!r} has invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise CheckpointError(f"{path!r}: tensor {name!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[tag].itemsize
        if not 0 <= begin <= end <= buffer_size:
            raise CheckpointError(f"{path!r}: tensor {name!r} data_offsets {offsets} lie outside the "
                                  f"{buffer_size}-byte data buffer (truncated file?)")
        if end - begin != expected:
            raise CheckpointError(f"{path!r}: tensor {name!r} of shape {shape} and dtype {tag} needs "
                                  f"{expected} bytes, but data_offsets span {end - begin}")
    return header, metadata


def read_safetensors(path: str | os.PathLike, with_metadata: bool = False):
    """Read every tensor of a ``.safetensors`` file into NumPy arrays.

    Args:
        path: the file.
        with_metadata: also return the ``__metadata__`` string map.

    Returns:
        ``{name: array}`` in header order (``BF16`` widened to float32), or
        ``(arrays, metadata)`` when ``with_metadata`` is true.

    Raises:
        CheckpointError: the header is malformed, a dtype is unsupported, or the data is truncated.
    """
    path = os.fspath(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path!r} is too short ({file_size} bytes) to be a safetensors file")
        (header_size,) = struct.unpack("<Q", head)
        if header_size > min(MAX_HEADER_BYTES, file_size - 8):
            raise CheckpointError(f"{path!r}: safetensors header claims {header_size} bytes but the file has "
                                  f"{file_size - 8} after the length field (corrupt or not safetensors)")
        header, metadata = _parse_header(path, f.read(header_size), file_size - 8 - header_size)
        data_start = 8 + header_size
        arrays = {}
        for name, entry in header.items():
            dtype = DTYPES[entry["dtype"]]
            array = np.empty(entry["shape"], dtype=dtype)
            begin, end = entry["data_offsets"]
            if end > begin:
                f.seek(data_start + begin)
                got = f.readinto(memoryview(array.reshape(-1)).cast("B"))
                if got != end - begin:
                    raise CheckpointError(f"{path!r}: tensor {name!r} is truncated ({got} of {end - begin} bytes)")
            if entry["dtype"] == "BF16":
                array = bfloat16_bits_to_float32(array)
            elif not dtype.isnative:
                array = array.astype(dtype.newbyteorder("="))
            arrays[name] = array
    return (arrays, dict(metadata)) if with_metadata else arrays


def write_safetensors(state: dict[str, np.ndarray], path: str | os.PathLike,
                      metadata: dict[str, str] | None = None) -> None:
    """Write ``{name: array}`` as a ``.safetensors`` file.

    Tensors are laid out by decreasing item size, then name, so every tensor is aligned;
    the header is space-padded to a multiple of 8 bytes.

    Args:
        state: names to NumPy arrays of a supported dtype (float16/32/64, (u)int8..64, bool).
        path: the file to write (overwritten).
        metadata: optional string-to-string map stored as ``__metadata__``.

    Raises:
        TypeError: an array's dtype has no safetensors tag, or metadata is not all strings.
    """
    arrays = {}
    for name, array in state.items():
        array = np.asarray(array)
        tag = _TAGS.get(array.dtype.newbyteorder("="))
        if tag is None:
            raise TypeError(f"cannot store {name!r} of dtype {array.dtype} in safetensors "
                            f"(supported: {sorted(str(d) for d in _TAGS)})")
        arrays[name] = (tag, np.array(array, dtype=DTYPES[tag], order="C", copy=None))  # keeps 0-d shape
    header: dict = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    order = sorted(arrays, key=lambda n: (-arrays[n][1].itemsize, n))
    offset = 0
    for name in order:
        tag, array = arrays[name]
        header[name] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in order:
            f.write(arrays[name][1].tobytes())
