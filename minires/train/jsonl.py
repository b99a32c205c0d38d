"""JSON-lines files that a crash or a full disk cannot leave unreadable.

A record is one JSON object on one line. :func:`append_jsonl` writes a record and its
newline in one call and, if the write fails (disk full, quota), cuts the file back to its
previous length, so a failed append leaves nothing behind. A process killed in the middle
of a write can still leave a torn last line; :func:`read_jsonl` recognises it (the last
line lacks its newline or is not valid JSON), leaves it out and reports it through
``warn`` naming the file, and :func:`write_jsonl` rewrites a file atomically without it.
Any other unreadable line is an error naming the file and the line.

Example:
    >>> append_jsonl("runs/x/metrics.jsonl", {"epoch": 1, "test_acc": 0.41})  # doctest: +SKIP
    >>> records = read_jsonl("runs/x/metrics.jsonl", warn=print)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings

from .checkpoint import atomic_write


class JsonlError(ValueError):
    """A JSON-lines file has an unreadable line before its last one (not a torn write)."""


def _encode(record: dict) -> bytes:
    return (json.dumps(record) + "\n").encode("utf-8")


def append_jsonl(path, record: dict) -> None:
    """Append ``record`` as one line and fsync; on failure the file keeps its previous bytes.

    Args:
        path: the ``.jsonl`` file (created when missing).
        record: a JSON-serialisable dict.

    Raises:
        OSError: the write failed (e.g. ``ENOSPC``); the partial line has been cut off again.
    """
    line = _encode(record)
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # cutting the file back frees space, so this works on a full disk
            raise
    finally:
        os.close(fd)


def read_jsonl(path, warn=None) -> list[dict]:
    """The records of a JSON-lines file, without a torn last line.

    Args:
        path: the ``.jsonl`` file; a missing file has no records.
        warn: called with a message naming the file when a torn last line is left out
            (default ``warnings.warn``).

    Returns:
        The records in file order (blank lines skipped).

    Raises:
        JsonlError: a line other than the last one is not a JSON object.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else an unterminated last line
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = _decode(raw)
        if record is None:
            if number == len(lines) and not tail:
                return _torn(path, records, raw, warn)
            raise JsonlError(f"{path}, line {number}: not a JSON object ({raw[:60]!r}); the file was changed "
                             "outside minires: fix or delete that line")
        records.append(record)
    if tail.strip():
        return _torn(path, records, tail, warn)
    return records


def _decode(raw: bytes):
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _torn(path: str, records: list, raw: bytes, warn) -> list[dict]:
    message = (f"{path}: left out a torn last line ({len(raw)} bytes, {raw[:40]!r}...) that an interrupted "
               "write left behind")
    (warn or (lambda text: warnings.warn(text, stacklevel=3)))(message)
    return records


def write_jsonl(path, records) -> None:
    """Replace ``path`` atomically by ``records``, one JSON line each."""
    text = b"".join(_encode(r) for r in records)
    atomic_write(path, lambda f: f.write(text))
