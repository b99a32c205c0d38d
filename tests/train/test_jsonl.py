"""JSON Lines helpers: appended records, a torn last line, a damaged line, atomic cut-back."""

import json

import pytest

from minires.train.jsonl import append_jsonl, read_jsonl, write_jsonl


def test_append_read_and_keep(tmp_path):
    path = str(tmp_path / "log.jsonl")
    assert read_jsonl(path) == []
    for step in range(4):
        append_jsonl(path, {"step": step, "values": [step * 0.5, None]})
    assert read_jsonl(path) == [{"step": s, "values": [s * 0.5, None]} for s in range(4)]
    write_jsonl(path, [r for r in read_jsonl(path) if r["step"] < 2])
    assert read_jsonl(path) == [{"step": 0, "values": [0.0, None]}, {"step": 1, "values": [0.5, None]}]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_torn_last_line_is_left_out_and_cut_away(tmp_path):
    path = str(tmp_path / "log.jsonl")
    append_jsonl(path, {"step": 0})
    with open(path, "a") as f:
        f.write(json.dumps({"step": 1, "long": "x" * 100})[:40])  # a write cut short by a kill
    assert read_jsonl(path) == [{"step": 0}]
    write_jsonl(path, read_jsonl(path))
    append_jsonl(path, {"step": 1})
    assert open(path).read() == '{"step": 0}\n{"step": 1}\n'


def test_a_damaged_complete_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 0}\n{"step": \n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"log.jsonl, line 2: not a JSON record"):
        read_jsonl(str(path))
