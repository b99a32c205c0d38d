"""Resource bounds of the weight readers, checked before anything is allocated or decompressed.

A weight file states sizes (element counts, record lengths, memo indexes) that a reader
would otherwise trust: a few hundred hostile bytes can ask for gigabytes. Every reader
in :mod:`minires.io` compares what a file asks for with :class:`ReadLimits` first and
raises :class:`~minires.io.errors.ResourceLimitError` instead of allocating. The defaults
let any genuine checkpoint through (bytes that are physically in the file are always
allowed); raise them for files that really are that large.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ResourceLimitError

MIB = 2**20
#: the most dimensions a tensor in a weight file may have: NumPy's own limit, so a format
#: check rather than a cap (no array could have more)
MAX_DIMS = 64


@dataclass(frozen=True)
class ReadLimits:
    """Caps that a weight file cannot make a reader exceed.

    Attributes:
        max_bytes: total bytes of the arrays a file makes the reader allocate (the state
            dict's tensors, copies of views, bfloat16 widened to float32) plus the bytes it
            makes the reader decompress. ``None``: four times the file's size, at least
            32 MiB (genuine files need at most about twice their size).
        max_pickle_bytes: size of a checkpoint's pickle (the object graph, not the tensor data).
        max_pickle_ops: opcodes a pickle may hold (each can create an object).
        max_memo: highest memo index a pickle may use (the unpickler allocates a table that large).
        max_depth: nesting depth of the containers in a checkpoint.

    Example:
        >>> from minires.io import ReadLimits, load_state_dict
        >>> state = load_state_dict("huge.npz", limits=ReadLimits(max_bytes=64 * 2**30))  # doctest: +SKIP
    """

    max_bytes: int | None = None
    max_pickle_bytes: int = 64 * MIB
    max_pickle_ops: int = 2_000_000
    max_memo: int = 1_000_000
    max_depth: int = 100

    def budget(self, path) -> "ByteBudget":
        """A :class:`ByteBudget` of ``max_bytes`` (or the default derived from ``path``'s size)."""
        limit = self.max_bytes
        if limit is None:
            limit = max(4 * os.path.getsize(path), 32 * MIB)
        return ByteBudget(int(limit), os.fspath(path), explicit=self.max_bytes is not None)


DEFAULT_LIMITS = ReadLimits()


class ByteBudget:
    """Counts the bytes a reader allocates on a file's say, and refuses past the limit.

    Args:
        limit: the most bytes allowed in total.
        source: the file, for messages.
        explicit: whether the limit was given by the caller (changes the hint).
    """

    def __init__(self, limit: int, source: str, explicit: bool = False):
        self.limit, self.used, self.source, self.explicit = limit, 0, source, explicit

    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` more for ``what``; raise :class:`ResourceLimitError` past the limit."""
        if nbytes > self.limit - self.used:
            origin = "given" if self.explicit else "default: 4x the file size, at least 32 MiB"
            raise ResourceLimitError(
                f"{self.source!r}: {what} needs {nbytes:,} bytes, which would bring this file's allocations to "
                f"{self.used + nbytes:,} bytes, over the limit of {self.limit:,} ({origin}); refusing before "
                f"allocating. If the file is genuine, raise it: limits=ReadLimits(max_bytes=...)")
        self.used += nbytes


def is_index(value) -> bool:
    """Whether a size, count or offset read from a file is an int in ``[0, 2**63)`` (a ``bool`` is not)."""
    return type(value) is int and 0 <= value < 2**63


def over_limit(source: str, what: str, value: int, limit: int, field: str) -> ResourceLimitError:
    """The error for a count in a file (``value``) over the :class:`ReadLimits` field ``field``."""
    return ResourceLimitError(f"{source!r}: {what} is {value:,}, over the limit of {limit:,}; refusing. If the "
                              f"file is genuine, raise it: limits=ReadLimits({field}=...)")
