"""NumPy ``.npz`` archives of named arrays, read without pickle and with every size checked first.

Each member ``name.npy`` is a small header (``{'descr': '<f4', 'fortran_order': False,
'shape': (3, 4)}``) and the raw data. The reader parses the header from a bounded read,
requires a plain numeric dtype, and requires the data to be exactly ``prod(shape) *
itemsize`` bytes, the member's stated size, before allocating or inflating anything.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile

import numpy as np

from .errors import CheckpointError, short_repr
from .limits import DEFAULT_LIMITS, MAX_DIMS, ByteBudget, ReadLimits, is_index
from .zip_records import open_record, open_zip, read_exactly

_MAX_HEADER = 10_000  # numpy's own safety limit on .npy headers
_MAGIC = b"\x93NUMPY"
_VERSIONS = {1: ("<H", np.lib.format.read_array_header_1_0), 2: ("<I", np.lib.format.read_array_header_2_0)}


def _parse_npy_header(member, source: str, name: str) -> tuple[tuple, bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, header_bytes)`` of an ``.npy`` stream, read in bounded pieces."""
    prefix = read_exactly(member, 8, source, name)
    if prefix[:6] != _MAGIC or prefix[6] not in _VERSIONS:
        raise CheckpointError(f"{source!r}: member {name!r} is not an .npy array of format version 1 or 2 "
                              f"(starts with {prefix!r})")
    length_format, parse = _VERSIONS[prefix[6]]
    raw_length = read_exactly(member, struct.calcsize(length_format), source, name)
    (length,) = struct.unpack(length_format, raw_length)
    if length > _MAX_HEADER:
        raise CheckpointError(f"{source!r}: member {name!r} has a {length}-byte .npy header (at most {_MAX_HEADER})")
    header = read_exactly(member, length, source, name)
    stream = io.BytesIO(raw_length + header)
    try:
        shape, fortran, dtype = parse(stream)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise CheckpointError(f"{source!r}: member {name!r} has a malformed .npy header ({short_repr(str(exc))})")
    return shape, fortran, dtype, 8 + len(raw_length) + length


def _check_array_header(shape, dtype, source, name):
    if len(shape) > MAX_DIMS or not all(is_index(n) for n in shape):
        raise CheckpointError(f"{source!r}: member {name!r} has invalid shape {short_repr(shape)}")
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufc":
        raise CheckpointError(f"cannot read {source!r} as .npz without pickle: member {name!r} has dtype "
                              f"{dtype} (only plain numeric and bool arrays are read; object arrays need pickle)")


def _member_name(info, source):
    if not info.filename.endswith(".npy"):
        raise CheckpointError(f"{source!r}: member {info.filename!r} is not an .npy array")
    return info.filename[: -len(".npy")]


def _read_member(archive, info, source, budget, data: bool):
    """``(shape, dtype)`` of one member, or its array when ``data`` is true."""
    with open_record(archive, info, None, source, budget) as member:
        shape, fortran, dtype, header_bytes = _parse_npy_header(member, source, info.filename)
        _check_array_header(shape, dtype, source, info.filename)
        nbytes = math.prod(shape) * dtype.itemsize
        if header_bytes + nbytes != info.file_size:
            raise CheckpointError(f"{source!r}: member {info.filename!r} declares shape {shape} of {dtype} "
                                  f"({nbytes:,} bytes) but holds {info.file_size - header_bytes:,} bytes of data")
        if not data:
            return shape, dtype
        budget.charge(nbytes, f"array {info.filename!r}")
        raw = read_exactly(member, nbytes, source, info.filename)
    array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=dtype.newbyteorder("="), order="K", copy=True)


def _read(path, limits: ReadLimits | None, data: bool):
    source = os.fspath(path)
    budget = (limits or DEFAULT_LIMITS).budget(source) if data else ByteBudget(2**63, source)  # headers only
    with open_zip(source, source) as archive:
        out = {}
        for info in archive.infolist():
            out[_member_name(info, source)] = _read_member(archive, info, source, budget, data)
        return out


def read_npz(path: str | os.PathLike, limits: ReadLimits | None = None) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` archive.

    Args:
        path: the archive.
        limits: :class:`~minires.io.ReadLimits` (the arrays, and any compressed member's
            inflated size, count against ``max_bytes``).

    Returns:
        ``{name: array}`` in the archive's order (native byte order, writable copies).

    Raises:
        CheckpointError: the file is not a readable ``.npz`` archive, a member is not a
            plain numeric ``.npy`` array, or its header disagrees with its size.
        ResourceLimitError: the arrays would exceed ``limits.max_bytes``.
    """
    return _read(path, limits, data=True)


def describe_npz(path: str | os.PathLike, limits: ReadLimits | None = None) -> dict[str, tuple]:
    """``{name: (shape, dtype)}`` of an ``.npz`` archive, from the headers only (checked as by :func:`read_npz`)."""
    return _read(path, limits, data=False)


def write_npz(state: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write ``{name: array}`` as an uncompressed ``.npz`` archive (one ``name.npy`` per entry).

    Names are stored verbatim (dots allowed), so ``read_npz`` gives the same keys back.

    Args:
        state: names to NumPy arrays (numeric or bool dtypes; no object arrays).
        path: the file to write (overwritten).
    """
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in state.items():
            with archive.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
