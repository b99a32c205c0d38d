"""Reading zip records (``.npz`` members, ``torch.save`` storages) with their sizes checked first.

A zip record states its uncompressed size; a deflated record of a few megabytes can
inflate to gigabytes. :func:`read_record` compares the stated size with what the caller
expects and charges decompressed bytes to a :class:`~minires.io.limits.ByteBudget` before
reading, then reads exactly that many bytes (Python's zip reader stops at the stated
size and checks the CRC there, so a record that lies about its size is caught).
"""

from __future__ import annotations

import zipfile
import zlib

from .errors import CheckpointError
from .limits import ByteBudget

_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


def open_zip(path, source: str) -> zipfile.ZipFile:
    """Open a zip archive; a corrupt one or one with duplicate names raises :class:`CheckpointError`."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{source!r}: corrupt zip archive ({exc})") from None
    names = archive.namelist()
    if len(set(names)) != len(names):
        archive.close()
        raise CheckpointError(f"{source!r}: zip archive holds two records of the same name; refusing the ambiguity")
    return archive


def check_record(info: zipfile.ZipInfo, expected: int | None, source: str, budget: ByteBudget,
                 max_size: int | None = None) -> None:
    """Check a record's method and stated size; charge a deflated one to ``budget`` (nothing is read).

    Args:
        info: the record.
        expected: the size the caller knows it must have (``None``: any).
        source: the file, for messages.
        budget: charged with the size of deflated records before they are inflated.
        max_size: the largest size accepted when ``expected`` is ``None``.

    Raises:
        CheckpointError: unsupported compression or encryption, a size other than expected.
        ResourceLimitError: inflating the record would exceed ``budget``.
    """
    name = info.filename
    if info.flag_bits & 0x1 or info.compress_type not in _METHODS:
        raise CheckpointError(f"{source!r}: record {name!r} is encrypted or compressed with method "
                              f"{info.compress_type} (only stored and deflated records are read)")
    if expected is not None and info.file_size != expected:
        raise CheckpointError(f"{source!r}: record {name!r} holds {info.file_size:,} bytes, expected {expected:,}")
    if max_size is not None and info.file_size > max_size:
        raise CheckpointError(f"{source!r}: record {name!r} holds {info.file_size:,} bytes, at most {max_size} expected")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise CheckpointError(f"{source!r}: stored record {name!r} states two different sizes")
    if info.compress_type == zipfile.ZIP_DEFLATED:
        budget.charge(info.file_size, f"inflating record {name!r}")


def read_exactly(member, nbytes: int, source: str, name: str) -> bytes:
    """Read ``nbytes`` from an open record; a short read, bad CRC or corrupt stream is a :class:`CheckpointError`."""
    try:
        data = member.read(nbytes)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise CheckpointError(f"{source!r}: corrupt record {name!r} ({exc})") from None
    if len(data) != nbytes:
        raise CheckpointError(f"{source!r}: record {name!r} is truncated ({len(data):,} of {nbytes:,} bytes)")
    return data


def open_record(archive: zipfile.ZipFile, info: zipfile.ZipInfo, expected: int | None, source: str,
                budget: ByteBudget, max_size: int | None = None):
    """One record opened for reading, after :func:`check_record` (same arguments).

    Raises:
        CheckpointError: see :func:`check_record`; also a record that cannot be opened.
        ResourceLimitError: inflating the record would exceed ``budget``.
    """
    check_record(info, expected, source, budget, max_size)
    try:
        return archive.open(info)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise CheckpointError(f"{source!r}: corrupt record {info.filename!r} ({exc})") from None


def read_record(archive: zipfile.ZipFile, info: zipfile.ZipInfo, expected: int | None, source: str,
                budget: ByteBudget, max_size: int | None = None) -> bytes:
    """The bytes of one record (:func:`open_record`, same arguments and errors; also a truncated
    record or a CRC mismatch)."""
    with open_record(archive, info, expected, source, budget, max_size) as member:
        return read_exactly(member, info.file_size, source, info.filename)
