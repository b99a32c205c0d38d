"""The minires command line: a tiny end-to-end train/eval, the models table, and every error path."""

import json
import os
import subprocess
import sys

import pytest

import minires as mr
from minires.cli import COMMANDS, build_parser, main

from .train.tiny import tiny_model, use_tiny_model

TINY = ["--data", "embedded", "--train-subset", "64", "--test-subset", "40", "--epochs", "1", "--batch-size", "32",
        "--no-progress", "--no-plot", "--eval-batch-size", "20"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_eval(tmp_path, capsys, monkeypatch):
    use_tiny_model(monkeypatch)
    out_dir = tmp_path / "run"
    code, out, err = _run(capsys, "train", *TINY, "--lr", "0.05", "--schedule", "cosine", "--out", str(out_dir))
    assert code == 0, err
    assert "test accuracy" in out
    config = json.load(open(out_dir / "config.json"))
    assert config["lr"] == 0.05 and config["schedule"] == "cosine" and config["epochs"] == 1
    assert config["weight_decay"] == 1e-4  # unset flags take the paper recipe's values
    monkeypatch.setattr("minires.train.setup.build_model", tiny_model)
    code, out, err = _run(capsys, "eval", "--weights", str(out_dir / "model.npz"), "--test-subset", "40")
    assert code == 0, err
    metrics = [json.loads(line) for line in open(out_dir / "metrics.jsonl")]
    assert f"test accuracy {metrics[-1]['test_acc'] * 100:.2f}%" in out
    # --resume with only --out takes every setting from the checkpoint (finished run: nothing to do)
    code, out, err = _run(capsys, "train", "--resume", "--out", str(out_dir), "--no-progress", "--no-plot")
    assert code == 0, err


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "resnet21"], "unknown model 'resnet21'"),
    (["train", "--data", "/nonexistent/cifar"], "/nonexistent/cifar: no such file or directory"),
    (["train", "--resume"], "--resume needs --out"),
    (["train", "--data", "embedded", "--dataset", "cifar100", "--epochs", "1"], "CIFAR-10 subset"),
    (["eval", "--weights", "/nonexistent/model.npz", "--model", "resnet20"], "no such file"),
    (["models", "zzz"], "no model name contains 'zzz'"),
])
def test_user_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert message in err and err.startswith("minires: error:")
    assert "Traceback" not in err + out


@pytest.mark.parametrize("argv, message", [
    (["train", "--batch-size", "0"], "expected an integer >= 1, got 0"),
    (["train", "--epochs", "two"], "expected an integer >= 1, got 'two'"),
    (["train", "--lr", "-0.1"], "expected a number in (0, inf)"),
    (["train", "--lr", "nan"], "expected a number in (0, inf)"),
    (["train", "--momentum", "1.5"], "expected a number in [0, 1)"),
    (["train", "--warmup-frac", "1"], "expected a number in [0, 1)"),
    (["train", "--schedule", "step"], "invalid choice: 'step'"),
    (["train", "--device", "tpu"], "unknown device 'tpu'"),
    (["eval", "--model", "resnet20"], "the following arguments are required: --weights"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_values_exit_2_with_usage(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(mr.cuda_available(), reason="checks the message shown without a GPU")
def test_cuda_without_gpu(capsys, tmp_path):
    code, _, err = _run(capsys, "train", "--device", "cuda", "--out", str(tmp_path / "x"))
    assert code == 2 and "CuPy or a GPU is not available" in err and "pip install" in err


def test_eval_wrong_model_for_weights(tmp_path, capsys):
    from minires.io import save_state_dict

    save_state_dict({"fc.weight": __import__("numpy").zeros((10, 3), "float32")}, tmp_path / "w.npz")
    code, _, err = _run(capsys, "eval", "--weights", str(tmp_path / "w.npz"), "--model", "resnet20",
                        "--data", "embedded")
    assert code == 2 and "cannot load" in err and "Traceback" not in err


def test_models_table(capsys):
    code, out, _ = _run(capsys, "models", "resnet20")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("resnet20 "))
    assert "269,722" in row and "20" in row.split()


def test_models_lists_every_model_without_a_filter(capsys):
    # a few seconds: the models are built without random initialisation (summary() only needs shapes)
    from minires import models  # noqa: PLC0415

    code, out, _ = _run(capsys, "models")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert list(rows) == models.available()
    # rows exactly as printed before summary() stopped initialising the weights
    assert rows["resnet152"] == "resnet152             152  60,192,808      11.51G  3x224x224"
    assert rows["wide_resnet50_2"] == "wide_resnet50_2        50  68,883,240      11.40G  3x224x224"
    assert rows["se_resnet50"] == "se_resnet50            50  28,088,024       4.09G  3x224x224"
    assert rows["densenet121"] == "densenet121           121   7,978,856       2.83G  3x224x224"
    assert rows["resnet1202"] == "resnet1202           1202  19,421,274       2.83G  3x32x32"
    assert rows["resnext29_8x64d"] == "resnext29_8x64d        29  34,426,698       5.39G  3x32x32"
    assert rows["densenet_bc_100_12"] == "densenet_bc_100_12    100     769,162     287.93M  3x32x32"


def test_no_command_prints_help(capsys):
    code, out, _ = _run(capsys)
    assert code == 2 and "train" in out and "eval" in out and "models" in out


def test_one_function_per_subcommand():
    names = [add.__name__ for add in COMMANDS]
    assert names[:3] == ["add_train_parser", "add_eval_parser", "add_models_parser"]
    assert all(n.startswith("add_") and n.endswith("_parser") for n in names)
    parser = build_parser()
    assert parser.parse_args(["models"]).func.__name__ == "run_models"


def test_real_process_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "minires.cli", "train", "--model", "nope"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "unknown model 'nope'" in result.stderr and "Traceback" not in result.stderr


def test_no_settings_runs_the_demo(tmp_path, capsys, monkeypatch):
    use_tiny_model(monkeypatch)
    import minires.cli as cli

    monkeypatch.setattr(cli, "DEMO", dict(cli.DEMO, epochs=1))  # the tiny model, one epoch: fast
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "train", "--no-progress", "--no-plot")
    assert code == 0, err
    assert "minires demo" in out and "test accuracy" in out and "The full recipe" in out
    (run,) = os.listdir(tmp_path / "runs")
    config = json.load(open(tmp_path / "runs" / run / "config.json"))
    assert config["data"] == "embedded" and config["schedule"] == cli.DEMO["schedule"]
    assert config["train_examples"] == 2000 and config["test_examples"] == 1000


def test_track_gradients_alone_still_runs_the_demo_and_writes_gradients_jsonl(tmp_path, capsys, monkeypatch):
    use_tiny_model(monkeypatch)
    import minires.cli as cli

    monkeypatch.setattr(cli, "DEMO", dict(cli.DEMO, epochs=1))
    code, out, err = _run(capsys, "train", "--no-progress", "--no-plot", "--track-gradients", "10",
                          "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "minires demo" in out
    with open(tmp_path / "run" / "gradients.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [0, 10, 20, 30]  # 32 steps of batch 64
