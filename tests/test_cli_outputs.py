"""The command line around a run's outputs: --resume / --overwrite, damaged files, strict weight loading.

Every error here is one ``minires: error:`` line naming the file or flag, never an
"internal error".
"""

import json
import os

import numpy as np
import pytest

from minires.cli import main

from .train.tiny import tiny_model, use_tiny_model

TINY = ["--data", "embedded", "--train-subset", "64", "--test-subset", "40", "--epochs", "2", "--batch-size", "32",
        "--checkpoint-every", "1", "--no-progress", "--no-plot", "--eval-batch-size", "20"]


@pytest.fixture(autouse=True)
def _tiny(monkeypatch):
    use_tiny_model(monkeypatch)
    monkeypatch.setattr("minires.train.setup.build_model", tiny_model)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "internal error" not in err and "Traceback" not in err
    return code, out, err


def test_resume_without_checkpoint_takes_config_json_not_the_defaults(tmp_path, capsys):
    """Case 2: `--resume` with only --out after checkpoint.npz was deleted."""
    out = tmp_path / "A"
    code, _, err = _run(capsys, "train", *TINY, "--lr", "0.05", "--out", str(out))
    assert code == 0, err
    metrics = (out / "metrics.jsonl").read_bytes()
    os.remove(out / "checkpoint.npz")
    code, stdout, err = _run(capsys, "train", "--out", str(out), "--resume", "--no-progress", "--no-plot")
    assert code == 0, err
    assert "starting the run again from epoch 1 with the settings of its config.json" in stdout
    config = json.load(open(out / "config.json"))
    assert (config["epochs"], config["batch_size"], config["lr"], config["data"]) == (2, 32, 0.05, "embedded")
    (previous,) = [n for n in os.listdir(out) if n.startswith("previous-")]
    assert (out / previous / "metrics.jsonl").read_bytes() == metrics  # the old records are kept


def test_overwrite_and_resume_flags(tmp_path, capsys):
    out = tmp_path / "A"
    assert _run(capsys, "train", *TINY, "--out", str(out))[0] == 0
    code, _, err = _run(capsys, "train", *TINY, "--lr", "0.05", "--out", str(out))
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    code, stdout, err = _run(capsys, "train", *TINY, "--lr", "0.05", "--out", str(out), "--overwrite")
    assert code == 0, err
    assert "--overwrite: moved config.json, metrics.jsonl, checkpoint.npz, model.npz" in stdout
    with pytest.raises(SystemExit) as info:
        main(["train", "--out", str(out), "--resume", "--overwrite"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_resume_of_a_folder_without_a_run(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "--out", str(tmp_path / "nothing"), "--resume")
    assert code == 2 and "holds no run to continue (no checkpoint.npz or config.json)" in err
    # with the settings given, --resume starts the run (a script can always pass --resume)
    code, stdout, err = _run(capsys, "train", *TINY, "--out", str(tmp_path / "nothing"), "--resume")
    assert code == 0 and "holds no run yet; starting a new one" in stdout, err


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_checkpoint_is_a_user_error(tmp_path, capsys, damage):
    out = tmp_path / "A"
    assert _run(capsys, "train", *TINY, "--out", str(out))[0] == 0
    path = out / "checkpoint.npz"
    path.write_bytes(path.read_bytes()[:3000] if damage == "truncate" else b"\x00" * 100)
    code, _, err = _run(capsys, "train", "--out", str(out), "--resume")
    assert code == 2 and f"{path}: not a readable checkpoint" in err and "--overwrite" in err


def test_bad_config_json_names_the_file(tmp_path, capsys):
    out = tmp_path / "A"
    assert _run(capsys, "train", *TINY, "--out", str(out))[0] == 0
    (out / "config.json").write_text('{"model": "resnet20",\n')
    code, _, err = _run(capsys, "eval", "--weights", str(out / "model.npz"))
    assert code == 2 and f"{out / 'config.json'} is not valid JSON" in err
    os.remove(out / "checkpoint.npz")
    code, _, err = _run(capsys, "train", "--out", str(out), "--resume")
    assert code == 2 and f"{out / 'config.json'} is not valid JSON" in err


def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, _, err = _run(capsys, "train", *TINY, "--out", str(tmp_path / "f"))
    assert code == 2 and "is a file, not a folder: choose another --out" in err
    assert (tmp_path / "f").read_text() == "x"


def test_eval_of_an_empty_test_split(tmp_path, capsys, rng):
    from .train.test_run_safety import _write_python_cifar

    out = tmp_path / "A"
    assert _run(capsys, "train", *TINY, "--out", str(out))[0] == 0
    _write_python_cifar(tmp_path / "data", rng, "test")
    code, _, err = _run(capsys, "eval", "--weights", str(out / "model.npz"), "--data", str(tmp_path / "data"))
    assert code == 2 and "the test split of" in err and "has no images; nothing to evaluate" in err


def test_eval_refuses_another_architecture_naming_the_first_key(tmp_path, capsys, monkeypatch):
    import minires.nn as nn

    def wider(config=None, num_classes=10):  # the tiny model with 5 channels instead of 4
        return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, num_classes))

    out = tmp_path / "A"
    assert _run(capsys, "train", *TINY, "--out", str(out))[0] == 0
    monkeypatch.setattr("minires.train.setup.build_model", wider)
    code, _, err = _run(capsys, "eval", "--weights", str(out / "model.npz"))
    assert code == 2
    assert "0.weight has shape (4, 3, 3, 3) in the file but (5, 3, 3, 3) in the model" in err


def test_eval_reads_a_training_checkpoint(tmp_path, capsys):
    out = tmp_path / "A"
    assert _run(capsys, "train", *TINY, "--out", str(out))[0] == 0
    code, from_model, err = _run(capsys, "eval", "--weights", str(out / "model.npz"))
    assert code == 0, err
    code, from_checkpoint, err = _run(capsys, "eval", "--weights", str(out / "checkpoint.npz"))
    assert code == 0, err
    assert from_model.split(", ")[:2] == from_checkpoint.split(", ")[:2]  # same accuracy and loss


def test_gradflow_refuses_weights_of_another_depth(tmp_path, capsys):
    """Case 6: resnet32 weights are not filtered down to a resnet20."""
    from minires import models
    from minires.io import save_state_dict

    save_state_dict(models.create("resnet32"), tmp_path / "r32.npz")
    (tmp_path / "config.json").write_text(json.dumps({"model": "resnet32"}))
    code, _, err = _run(capsys, "gradflow", "--model", "resnet20", "--checkpoint", str(tmp_path / "r32.npz"),
                        "--batch-size", "2", "--out", str(tmp_path / "gf"), "--no-plots")
    assert code == 2
    assert ("the file has layer1.3.conv1.weight (shape (16, 16, 3, 3)), which the model lacks" in err
            and "says they are resnet32 weights: pass --model resnet32" in err)
    code, _, err = _run(capsys, "gradflow", "--model", "resnet32", "--checkpoint", str(tmp_path / "r32.npz"),
                        "--batch-size", "2", "--out", str(tmp_path / "gf"), "--no-plots")
    assert code == 0, err


def test_load_weights_strict_messages():
    from minires import nn
    from minires.train import WeightsMismatchError, load_weights_strict

    model = nn.Linear(3, 2)
    state = {"weight": np.full((2, 3), 0.5, np.float32), "bias": np.zeros(2, np.float32)}
    load_weights_strict(model, dict(state), "w.npz", "m")  # an exact fit loads
    np.testing.assert_array_equal(np.asarray(model.weight.data), state["weight"])
    for broken, needle in (({"bias": state["bias"]}, "weight (shape (2, 3)) is missing from the file"),
                           ({**state, "extra": np.zeros(3)}, "the file has extra (shape (3,)), which the model lacks"),
                           ({**state, "weight": np.zeros((3, 3))}, "weight has shape (3, 3) in the file but (2, 3)")):
        with pytest.raises(WeightsMismatchError, match="cannot load w.npz into m") as info:
            load_weights_strict(model, broken, "w.npz", "m")
        assert needle in str(info.value)


def test_os_errors_a_user_causes_are_one_line_naming_the_file(tmp_path, capsys):
    """The safety net in main(): e.g. gradflow's --out is a file."""
    (tmp_path / "f").write_text("x")
    code, _, err = _run(capsys, "gradflow", "--model", "resnet20", "--batch-size", "2", "--out", str(tmp_path / "f"),
                        "--no-plots")
    assert code == 2 and err.startswith(f"minires: error: {tmp_path / 'f'}: File exists; a file stands where a folder")
