"""Append-safe JSON lines: a failed append leaves nothing, a torn last line is left out with a warning."""

import errno
import json
import os

import pytest

from minires.train import jsonl
from minires.train.jsonl import JsonlError, append_jsonl, read_jsonl, write_jsonl


def test_append_and_read_back(tmp_path):
    path = tmp_path / "m.jsonl"
    assert read_jsonl(path) == []  # a missing file has no records
    for epoch in (1, 2, 3):
        append_jsonl(path, {"epoch": epoch, "loss": 1.0 / epoch})
    assert [r["epoch"] for r in read_jsonl(path)] == [1, 2, 3]
    assert path.read_bytes().count(b"\n") == 3


def test_failed_append_cuts_the_partial_line_off(tmp_path, monkeypatch):
    """The disk fills in the middle of a record: the file keeps exactly its previous bytes."""
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"epoch": 1})
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 8:
            real_write(fd, data[:8])  # some bytes reach the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jsonl.os, "write", half_then_full)
    with pytest.raises(OSError) as info:
        append_jsonl(path, {"epoch": 2, "note": "x" * 100})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before
    append_jsonl(path, {"epoch": 2})
    assert [r["epoch"] for r in read_jsonl(path)] == [1, 2]


@pytest.mark.parametrize("tail", [b'{"epoch": 3, "lo', b'{"epoch": 3}', b'{"epoch": 3, "lo\n', b'\x00\x00\x00\n'])
def test_torn_last_line_is_left_out_with_a_warning_naming_the_file(tmp_path, tail):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"epoch": 1}\n{"epoch": 2}\n' + tail)
    warnings = []
    assert read_jsonl(path, warn=warnings.append) == [{"epoch": 1}, {"epoch": 2}]
    assert len(warnings) == 1 and str(path) in warnings[0] and "torn last line" in warnings[0]
    with pytest.warns(UserWarning, match="metrics.jsonl: left out a torn last line"):
        read_jsonl(path)


def test_a_bad_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(JsonlError, match=r"metrics.jsonl, line 2: not a JSON object .*fix or delete that line"):
        read_jsonl(path)
    path.write_bytes(b'{"epoch": 1}\n[1, 2]\n{"epoch": 3}\n')  # valid JSON, but not a record
    with pytest.raises(JsonlError, match="line 2"):
        read_jsonl(path)


def test_blank_lines_are_skipped_and_rewrite_is_atomic(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n')
    records = read_jsonl(path)
    assert records == [{"a": 1}, {"a": 2}]
    write_jsonl(path, records[:1])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1}]
    assert os.listdir(tmp_path) == ["m.jsonl"]
