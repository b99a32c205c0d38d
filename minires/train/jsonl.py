"""JSON Lines files of a run (``metrics.jsonl``, ``gradients.jsonl``): append, read, cut back.

A record is appended as one line in one ``write`` followed by ``fsync``, so a run killed
at any moment leaves whole lines plus at most one torn last line (no newline at its end).
:func:`read_jsonl` drops such a torn line; :func:`write_jsonl` rewrites a file atomically
(with the records a resumed run keeps).
"""

from __future__ import annotations

import json
import os

from .checkpoint import atomic_write


def append_jsonl(path: str, record: dict) -> None:
    """Append ``record`` as one JSON line and flush it to disk."""
    line = (json.dumps(record) + "\n").encode()
    with open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str) -> list:
    """The records of a JSON Lines file (``[]`` if it does not exist).

    A last line without its newline (a write cut short by a kill, or one still being
    written by a running process) is left out.

    Raises:
        ValueError: a complete line is not JSON (the message names the file and line).
    """
    if not os.path.isfile(path):
        return []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    lines.pop()  # b"" after the final newline, or a torn last line
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise ValueError(f"{path}, line {number}: not a JSON record ({exc}); the file is damaged") from None
    return records


def write_jsonl(path: str, records) -> None:
    """Replace ``path`` atomically by ``records``, one JSON line each."""
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    atomic_write(path, lambda f: f.write(text))
