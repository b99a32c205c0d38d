"""Reading the members of a CIFAR ``.tar.gz`` with every size bounded before it is read.

Only members at their exact official paths (``cifar-10-batches-py/data_batch_1``, ...) are
taken; each member's stated size is compared with what that CIFAR file can hold before
it is decompressed, the archive's member count and total size are bounded, and the
compressed stream is read to its end so that a CRC error is reported as a corrupt
archive (a corrupt header otherwise just ends the member list early).
"""

from __future__ import annotations

import lzma
import tarfile
import zlib

MAX_MEMBERS = 64  # the official archives hold 5 to 9 entries
_CHUNK = 1 << 20


class CorruptArchiveError(ValueError):
    """A CIFAR archive fails its CRC, is truncated, or is not what a CIFAR archive can be."""


def _member_path(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _check_member(path, member, seen, total, wanted, largest, total_limit):
    if seen > MAX_MEMBERS:
        raise CorruptArchiveError(f"{path}: more than {MAX_MEMBERS} entries; not a CIFAR archive")
    name = _member_path(member.name)
    limit = wanted.get(name, largest)
    if member.size > limit:
        raise CorruptArchiveError(f"{path}: entry {name!r} claims {member.size:,} bytes, more than any CIFAR file "
                                  f"there holds ({limit:,}); refusing to decompress it")
    if total > total_limit:
        raise CorruptArchiveError(f"{path}: entries add up to more than a CIFAR archive holds ({total:,} bytes)")
    return name


def _drain(path, fileobj, budget: int) -> None:
    """Read the (decompressed) stream to its end so the compressor checks its CRC; bounded by ``budget``."""
    read = 0
    while chunk := fileobj.read(_CHUNK):
        read += len(chunk)
        if read > budget:
            raise CorruptArchiveError(f"{path}: more data after the last entry than a CIFAR archive holds")


def read_members(path, wanted: dict[str, int]) -> dict[str, bytes]:
    """The bytes of each member of ``path`` at an exact path of ``wanted``.

    Args:
        path: a ``.tar``, ``.tar.gz``, ``.tar.bz2`` or ``.tar.xz`` archive.
        wanted: ``{path inside the archive: the most bytes it may hold}``.

    Returns:
        ``{path: bytes}`` for the wanted members present (a leading ``./`` is ignored).

    Raises:
        CorruptArchiveError: a CRC or format error, a truncated archive, a wanted path
            present twice, or sizes and counts no CIFAR archive has (nothing large is
            read or decompressed before its size is checked).
    """
    largest = max(wanted.values())
    total_limit = sum(wanted.values()) + (16 << 20)  # the wanted files, a readme and padding
    found, seen, total = {}, 0, 0
    try:
        with tarfile.open(path, "r:*") as tar:
            while (member := tar.next()) is not None:
                seen, total = seen + 1, total + member.size
                name = _check_member(path, member, seen, total, wanted, largest, total_limit)
                if name in wanted and member.isfile():
                    if name in found:
                        raise CorruptArchiveError(f"{path}: holds {name!r} twice; refusing the ambiguity")
                    found[name] = tar.extractfile(member).read()
            _drain(path, tar.fileobj, total_limit)
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise CorruptArchiveError(f"{path}: not a readable tar archive, or a corrupt or truncated one "
                                  f"({type(exc).__name__}: {exc}); download it again") from None
    return found
