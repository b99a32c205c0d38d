"""A dependency-free reader and writer of the ``.safetensors`` format.

Layout: an unsigned 64-bit little-endian header length ``N``, ``N`` bytes of UTF-8 JSON
``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}``
(offsets relative to the byte buffer that follows the header), then the raw little-endian
tensor bytes. Nothing in the file is executed; every offset and size is validated
(sizes as Python integers, so nothing overflows) before any array is allocated, and the
tensors must tile the data buffer exactly, as the format requires.
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from .errors import CheckpointError, short_repr
from .limits import DEFAULT_LIMITS, MAX_DIMS, is_index

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


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKey(sorted({k for k in keys if keys.count(k) > 1})[:5])
    return dict(pairs)


class _DuplicateKey(Exception):
    pass


def _load_json(path: str, raw: bytes):
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path!r}: safetensors header is not valid UTF-8 JSON ({exc})") from None
    except _DuplicateKey as exc:
        raise CheckpointError(f"{path!r}: safetensors header names {exc.args[0]} twice") from None
    except RecursionError:
        raise CheckpointError(f"{path!r}: safetensors header is nested too deeply to be one") from None


def _check_entry(path: str, name: str, entry) -> tuple:
    """``(tag, shape, begin, end)`` of one header entry, every field checked."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointError(f"{path!r}: entry {short_repr(name)} needs 'dtype', 'shape' and 'data_offsets', "
                              f"got {short_repr(entry)}")
    tag, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(tag, str) or tag not in DTYPES:
        raise CheckpointError(f"{path!r}: tensor {short_repr(name)} has unsupported dtype {short_repr(tag)} "
                              f"(supported: {', '.join(DTYPES)})")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(is_index(s) for s in shape)):
        raise CheckpointError(f"{path!r}: tensor {short_repr(name)} has invalid shape {short_repr(shape)} "
                              f"(expected a list of at most {MAX_DIMS} integers in [0, 2**63))")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_index(o) for o in offsets)):
        raise CheckpointError(f"{path!r}: tensor {short_repr(name)} has invalid data_offsets {short_repr(offsets)}")
    begin, end = offsets
    expected = math.prod(shape) * DTYPES[tag].itemsize
    if end < begin or end - begin != expected:
        raise CheckpointError(f"{path!r}: tensor {short_repr(name)} of shape {shape} and dtype {tag} needs "
                              f"{expected} bytes, but data_offsets span {end - begin}")
    return tag, tuple(shape), begin, end


def _check_layout(path: str, spans: list, buffer_size: int) -> None:
    """Tensors must tile the data buffer: no overlap, no gap, nothing past its end (as the format requires)."""
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            problem = "overlaps the tensor before it" if begin < position else f"leaves a gap at byte {position}"
            raise CheckpointError(f"{path!r}: tensor {short_repr(name)} at bytes [{begin}, {end}) {problem}")
        position = end
    if position != buffer_size:
        raise CheckpointError(f"{path!r}: tensors cover {position:,} bytes but the data buffer holds "
                              f"{buffer_size:,} (data_offsets lie outside the buffer: truncated file?)")


def _parse_header(path: str, raw: bytes, buffer_size: int) -> tuple[dict, dict]:
    header = _load_json(path, raw)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path!r}: safetensors header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{path!r}: '__metadata__' must be an object of strings")
    entries = {name: _check_entry(path, name, entry) for name, entry in header.items()}
    _check_layout(path, [(begin, end, name) for name, (_, _, begin, end) in entries.items()], buffer_size)
    return entries, metadata


def _read_header(path: str, f, file_size: int) -> tuple[dict, dict, int]:
    head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(f"{path!r} is too short ({file_size} bytes) to be a safetensors file")
    (header_size,) = struct.unpack("<Q", head)
    if header_size > min(MAX_HEADER_BYTES, file_size - 8):
        raise CheckpointError(f"{path!r}: safetensors header claims {header_size} bytes but the file has "
                              f"{file_size - 8} after the length field (corrupt or not safetensors)")
    entries, metadata = _parse_header(path, f.read(header_size), file_size - 8 - header_size)
    return entries, metadata, 8 + header_size


def describe_safetensors(path: str | os.PathLike) -> dict:
    """``{name: (tag, shape)}`` from a ``.safetensors`` header, checked as :func:`read_safetensors` does."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        entries, _, _ = _read_header(path, f, os.path.getsize(path))
    return {name: (tag, shape) for name, (tag, shape, _, _) in entries.items()}


def read_safetensors(path: str | os.PathLike, with_metadata: bool = False, limits=None):
    """Read every tensor of a ``.safetensors`` file into NumPy arrays.

    Args:
        path: the file.
        with_metadata: also return the ``__metadata__`` string map.
        limits: :class:`~minires.io.ReadLimits` (the arrays count against ``max_bytes``).

    Returns:
        ``{name: array}`` in header order (``BF16`` widened to float32), or
        ``(arrays, metadata)`` when ``with_metadata`` is true.

    Raises:
        CheckpointError: the header is malformed (bad or duplicate entries, tensors that
            overlap, leave gaps or reach past the data), a dtype is unsupported, or the
            data is truncated.
    """
    path = os.fspath(path)
    budget = (limits or DEFAULT_LIMITS).budget(path)
    arrays = {}
    with open(path, "rb") as f:
        entries, metadata, data_start = _read_header(path, f, os.path.getsize(path))
        for name, (tag, shape, begin, end) in entries.items():
            budget.charge((end - begin) * (2 if tag == "BF16" else 1), f"tensor {name!r}")
            arrays[name] = _read_tensor(path, f, name, tag, shape, data_start + begin, end - begin)
    return (arrays, dict(metadata)) if with_metadata else arrays


def _read_tensor(path, f, name, tag, shape, offset, nbytes):
    dtype = DTYPES[tag]
    array = np.empty(shape, dtype=dtype)
    if nbytes:
        f.seek(offset)
        got = f.readinto(memoryview(array.reshape(-1)).cast("B"))
        if got != nbytes:
            raise CheckpointError(f"{path!r}: tensor {name!r} is truncated ({got} of {nbytes} bytes)")
    if tag == "BF16":
        return bfloat16_bits_to_float32(array)
    if tag == "BOOL":
        return array.view(np.uint8) != 0
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


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
