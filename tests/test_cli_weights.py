"""`minires eval` on third-party checkpoints (--normalize, --rename, --key), `minires weights`, `train --normalize`."""

import json
import re

import numpy as np
import pytest

import minires as mr
from minires.cli import main
from minires.data import Loader, load_embedded, normalization_stats
from minires.train import evaluate_model

from .io.checkpoint_files import akamaster_state, write_legacy_state
from .io.test_third_party import random_resnet20
from .train.tiny import use_tiny_model

EVAL = ["--model", "resnet20", "--data", "embedded", "--test-subset", "40", "--batch-size", "20"]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _correct(out):
    return int(re.search(r"\((\d+)/40\)", out).group(1))


def _minires_correct(model, normalize):
    _, test = load_embedded()
    images, labels = test.images[:40], test.labels[:40]
    from minires.data import Dataset

    loader = Loader(Dataset(images, labels, test.classes), 20, *normalization_stats(normalize, "cifar10"))
    return evaluate_model(model, loader)[1]


@pytest.fixture
def published(tmp_path):
    """An akamaster-style ResNet-20 checkpoint (PyTorch 0.3 format, GPU storages) and the model it holds."""
    model = random_resnet20(seed=3)
    path = tmp_path / "resnet20-12fca82f.th"
    write_legacy_state(path, {"best_prec1": 91.73, "state_dict": akamaster_state(model.state_dict())},
                       storage_module="torch.cuda", location="cuda:0")
    return path, model


def test_eval_a_published_checkpoint_from_the_command_line(capsys, published):
    path, model = published
    code, out, err = _run(capsys, "eval", "--weights", path, *EVAL, "--rename", "linear=fc", "--normalize", "imagenet")
    assert code == 0, err
    assert "(normalize imagenet)" in out
    assert _correct(out) == _minires_correct(model, "imagenet")
    # without the rename, the error says which one to pass
    code, out, err = _run(capsys, "eval", "--weights", path, *EVAL, "--normalize", "imagenet")
    assert code == 2 and "fc.weight (shape (10, 64)) is missing from the file" in err and "--rename linear=fc" in err
    code, out, err = _run(capsys, "eval", "--weights", path, *EVAL, "--rename", "linear")
    assert code == 2 and "--rename 'linear': expected OLD=NEW" in err
    code, out, err = _run(capsys, "eval", "--weights", path, *EVAL, "--key", "nope")
    assert code == 2 and "has no entry 'nope' at its top level (found: ['best_prec1', 'state_dict'])" in err


@pytest.mark.parametrize("argv, message", [
    (["eval", "--weights", "x", "--normalize", "imagenett"], "argument --normalize: normalize must be one of"),
    (["train", "--normalize", "0.5"], "argument --normalize: normalize must be one of"),
])
def test_bad_normalize_values_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_weights_lists_any_supported_file(tmp_path, capsys, published):
    path, model = published
    code, out, err = _run(capsys, "weights", path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{path}: PyTorch checkpoint (legacy stream format, before 1.6), {path.stat().st_size:,} bytes"
    assert lines[1] == "state dict under 'state_dict' (other entries: best_prec1=91.73)"
    assert re.fullmatch(r"module\.conv1\.weight +float32   \(16, 3, 3, 3\)", lines[3])
    assert re.fullmatch(r"module\.linear\.bias +float32   \(10,\)", lines[-2])
    expected = sum(v.size for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert lines[-1] == f"{len(lines) - 4} tensors, {expected:,} values"
    npz = tmp_path / "w.npz"
    mr.io.save_state_dict(model, npz)
    code, out, err = _run(capsys, "weights", npz)
    assert code == 0 and "NumPy .npz archive" in out and re.search(r"bn1\.num_batches_tracked +int64 +\(\)", out)
    (tmp_path / "junk.bin").write_bytes(b"junk")
    code, out, err = _run(capsys, "weights", tmp_path / "junk.bin")
    assert code == 2 and "junk.bin'" in err and "Traceback" not in err


def test_train_records_normalize_and_eval_uses_it(tmp_path, capsys, monkeypatch):
    use_tiny_model(monkeypatch)
    out_dir = tmp_path / "run"
    tiny = ["--data", "embedded", "--train-subset", "64", "--test-subset", "40", "--epochs", "1", "--batch-size",
            "32", "--no-progress", "--no-plot", "--eval-batch-size", "20"]
    code, out, err = _run(capsys, "train", *tiny, "--normalize", "0.5,0.25", "--out", out_dir)
    assert code == 0, err
    config = json.load(open(out_dir / "config.json"))
    assert config["normalize"] == "0.5,0.25"
    assert config["normalize_mean"] == [0.5] * 3 and config["normalize_std"] == [0.25] * 3
    from .train.tiny import tiny_model

    monkeypatch.setattr("minires.train.setup.build_model", tiny_model)
    code, out, err = _run(capsys, "eval", "--weights", out_dir / "model.npz", "--test-subset", "40")
    assert code == 0, err
    assert "(normalize 0.5,0.25 (config.json))" in out
    metrics = [json.loads(line) for line in open(out_dir / "metrics.jsonl")]
    assert f"test accuracy {metrics[-1]['test_acc'] * 100:.2f}%" in out
    code, out, err = _run(capsys, "train", "--resume", "--out", out_dir, "--normalize", "imagenet", "--no-progress")
    assert code == 2 and "--normalize: checkpoint '0.5,0.25', now 'imagenet'" in err


@pytest.mark.torch
def test_eval_agrees_with_torch_on_a_torch_saved_dataparallel_checkpoint(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from .torch_reference import CifarResNet

    torch.manual_seed(1)
    net = CifarResNet([3, 3, 3], num_classes=10, shortcut="A")
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    net.eval()
    state = {k.replace("fc.", "linear."): v for k, v in torch.nn.DataParallel(net).state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet20-12fca82f.th"
    torch.save({"best_prec1": 91.73, "state_dict": state}, path, _use_new_zipfile_serialization=False)
    code, out, err = _run(capsys, "eval", "--weights", path, *EVAL, "--rename", "linear=fc", "--normalize", "imagenet")
    assert code == 0, err
    _, test = load_embedded()
    mean, std = normalization_stats("imagenet", "cifar10")
    x = (test.images[:40].astype(np.float32) / 255 - mean[:, None, None]) / std[:, None, None]
    with torch.no_grad():
        predicted = net(torch.from_numpy(x)).argmax(1).numpy()
    assert _correct(out) == int((predicted == test.labels[:40]).sum())
