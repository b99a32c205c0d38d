"""The output folder's lock, claim and move-aside, and the messages for unusable folders and files."""

import errno
import json
import os

import numpy as np
import pytest

from minires.train import RunDirectory, RunDirError, RunDirLockedError, save_checkpoint
from minires.train.run_dir import LOCK_NAME, RUN_FILES, read_config_json, read_run_config, writing


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    first = RunDirectory(tmp_path / "run")
    first.lock()
    assert first.locked and (tmp_path / "run").is_dir()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    second = RunDirectory(tmp_path / "run")
    with pytest.raises(RunDirLockedError, match=rf"in use by another minires run \(pid {os.getpid()} on .*choose "
                                                 "another --out"):
        second.lock()
    assert not second.locked
    first.release()
    with second:  # free again once released
        assert second.locked
    assert not second.locked


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match=r"--out .*f is a file, not a folder: choose another --out"):
        RunDirectory(tmp_path / "f")
    with pytest.raises(RunDirError, match=r"cannot write .*f/sub/.minires.lock: .*is a file, not a folder"):
        RunDirectory(tmp_path / "f" / "sub").lock()


@pytest.mark.parametrize("code, advice", [
    (errno.ENOSPC, r"the disk is full\. The files already in /x/run are intact: free some space, then continue "
                   r"with `minires train --out /x/run --resume`"),
    (errno.EACCES, r"/x/run is not writable: fix its permissions or choose another --out"),
    (errno.EROFS, r"/x/run is not writable"),
])
def test_write_errors_name_the_file_and_what_to_do(code, advice):
    with pytest.raises(RunDirError, match=r"cannot write /x/run/checkpoint.npz: .*; " + advice):
        with writing("/x/run/checkpoint.npz", "/x/run"):
            raise OSError(code, os.strerror(code))


def _fill(folder, names):
    for name in names:
        (folder / name).write_bytes(name.encode())


def test_claim_refuses_a_folder_holding_a_run(tmp_path):
    _fill(tmp_path, ["config.json", "metrics.jsonl", "model.npz"])
    with RunDirectory(tmp_path) as run_dir, pytest.raises(
            RunDirError, match=r"already holds a run \(config.json, metrics.jsonl, model.npz\); pass --resume to "
                               "continue it, --overwrite to move its files aside"):
        run_dir.claim(False, False, None, print)
    assert sorted(os.listdir(tmp_path)) == [LOCK_NAME, "config.json", "metrics.jsonl", "model.npz"]


def test_overwrite_moves_the_files_aside_never_deleting(tmp_path):
    lines = []
    with RunDirectory(tmp_path) as run_dir:
        for round_ in range(2):  # twice within one second: two different folders
            _fill(tmp_path, RUN_FILES)
            (tmp_path / "notes.txt").write_text("mine")
            assert run_dir.claim(False, True, None, lines.append) is None
    previous = sorted(n for n in os.listdir(tmp_path) if n.startswith("previous-"))
    assert len(previous) == 2 and len(lines) == 2 and previous[0] in lines[0]
    for folder in previous:
        assert sorted(os.listdir(tmp_path / folder)) == sorted(RUN_FILES)
        assert (tmp_path / folder / "model.npz").read_bytes() == b"model.npz"
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not a run file: left where it is


def test_resume_without_checkpoint_restarts_from_config_json(tmp_path):
    _fill(tmp_path, ["metrics.jsonl", "model.npz"])
    (tmp_path / "config.json").write_text('{"lr": 0.3}')
    checked, lines = [], []
    with RunDirectory(tmp_path) as run_dir:
        assert run_dir.claim(True, False, lambda saved, source: checked.append((saved, source)), lines.append) is None
    assert checked == [({"lr": 0.3}, str(tmp_path / "config.json"))]
    assert "starting the run again from epoch 1 with the settings of its config.json" in lines[0]
    assert not (tmp_path / "model.npz").exists()
    (moved,) = [n for n in os.listdir(tmp_path) if n.startswith("previous-")]
    assert sorted(os.listdir(tmp_path / moved)) == ["config.json", "metrics.jsonl", "model.npz"]


def test_resume_without_checkpoint_or_config_json(tmp_path):
    lines = []
    with RunDirectory(tmp_path / "new") as run_dir:
        assert run_dir.claim(True, False, None, lines.append) is None
    assert "holds no run yet; starting a new one" in lines[0]
    _fill(tmp_path, ["metrics.jsonl"])
    with RunDirectory(tmp_path) as run_dir, pytest.raises(RunDirError, match="neither checkpoint.npz nor config.json"):
        run_dir.claim(True, False, None, lines.append)


def test_resume_with_checkpoint_returns_it_and_stale_temp_files_go(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.npz", {"w": np.zeros(2)}, {"config": {"lr": 0.1}})
    (tmp_path / ".checkpoint.npz.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".model.npz.abc123.tmp").write_bytes(b"half")
    with RunDirectory(tmp_path) as run_dir:
        assert run_dir.claim(True, False, None, print) == str(tmp_path / "checkpoint.npz")
    assert sorted(os.listdir(tmp_path)) == [LOCK_NAME, "checkpoint.npz"]


def test_read_run_config_prefers_the_checkpoint_and_names_damaged_files(tmp_path):
    assert read_run_config(tmp_path) == (None, None)
    (tmp_path / "config.json").write_text('{"lr": 0.3,\n')
    with pytest.raises(RunDirError, match=r"config.json is not valid JSON \(.* at line 2, column 1\); restore it"):
        read_run_config(tmp_path)
    (tmp_path / "config.json").write_text('{"lr": 0.3}')
    assert read_run_config(tmp_path) == ({"lr": 0.3}, str(tmp_path / "config.json"))
    save_checkpoint(tmp_path / "checkpoint.npz", {"w": np.zeros(1000)}, {"config": {"lr": 0.1}})
    assert read_run_config(tmp_path)[0] == {"lr": 0.1}
    data = (tmp_path / "checkpoint.npz").read_bytes()
    (tmp_path / "checkpoint.npz").write_bytes(data[:len(data) // 2])  # a truncated copy
    with pytest.raises(RunDirError, match=r"checkpoint.npz: not a readable checkpoint \(BadZipFile.*it cannot be "
                                          "resumed.*--overwrite"):
        read_run_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="config.json holds a JSON list, expected an object"):
        read_config_json(tmp_path / "config.json")
