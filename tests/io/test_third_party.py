"""Third-party checkpoints as published: legacy PyTorch files, nested state dicts, key surgery."""

import collections

import numpy as np
import pytest

import minires as mr
import minires.io as mio
from minires import models

from .checkpoint_files import akamaster_state, write_legacy_state


def random_resnet20(seed=0):
    """A minires ResNet-20 with random weights and random batch-norm statistics (so BN matters)."""
    mr.manual_seed(seed)
    model = models.create("resnet20", num_classes=10)
    rng = np.random.default_rng(seed)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.data[...] = rng.normal(0, 0.1, buffer.shape)
        elif name.endswith("running_var"):
            buffer.data[...] = rng.uniform(0.5, 1.5, buffer.shape)
    return model.eval()


@pytest.mark.parametrize("storage_module, location", [("torch", "cpu"), ("torch.cuda", "cuda:0")])
def test_pre_1_0_rebuild_tensor_checkpoint_loads_byte_exact(tmp_path, rng, storage_module, location):
    state = collections.OrderedDict(
        w=rng.standard_normal((4, 3, 3, 3)).astype(np.float32), b=rng.standard_normal(4),
        h=rng.standard_normal(5).astype(np.float16), n=np.array([3, -2**40], np.int64),
        u=np.arange(6, dtype=np.uint8).reshape(2, 3), s=np.array(2.5, np.float32))
    path = tmp_path / "old.th"
    write_legacy_state(path, {"best_prec1": 91.73, "arch": "resnet20", "state_dict": state},
                       storage_module=storage_module, location=location)
    assert b"_rebuild_tensor\n" in path.read_bytes() and storage_module.encode() + b"\nFloatStorage" in path.read_bytes()
    loaded = mio.load_state_dict(path)
    assert list(loaded) == list(state)
    for name, value in state.items():
        assert loaded[name].dtype == value.dtype and loaded[name].shape == value.shape, name
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    info = mio.inspect_weights(path)
    assert info.format.startswith("PyTorch checkpoint (legacy") and info.nested_key == "state_dict"
    assert info.extras == {"best_prec1": "91.73", "arch": "'resnet20'"}
    assert info.tensors["w"] == mio.TensorInfo((4, 3, 3, 3), "float32")


def test_published_cifar_resnet_checkpoint_loads_with_three_lines(tmp_path):
    """akamaster-style: DataParallel names, 'linear' classifier, no num_batches_tracked, nested, '.th'."""
    model = random_resnet20()
    path = tmp_path / "resnet20-12fca82f.th"
    write_legacy_state(path, {"best_prec1": 91.73, "state_dict": akamaster_state(model.state_dict())},
                       storage_module="torch.cuda", location="cuda:0")
    state = mio.load_state_dict(path)
    state = mio.rename_keys(state, {"linear": "fc"}, strip_prefix="module.")
    fresh = models.create("resnet20", num_classes=10).eval()
    fresh.load_state_dict(state)
    x = mr.randn(2, 3, 32, 32)
    with mr.no_grad():
        np.testing.assert_array_equal(fresh(x).numpy(), model(x).numpy())


def test_rename_keys():
    state = {"module.linear.weight": 1, "module.linear2.bias": 2, "module.layer1.0.conv1.weight": 3, "other": 4}
    out = mio.rename_keys(state, {"linear": "fc", "layer1.0": "stage1.block0"}, strip_prefix="module.")
    assert out == {"fc.weight": 1, "linear2.bias": 2, "stage1.block0.conv1.weight": 3, "other": 4}
    assert list(mio.rename_keys(state, {"module.layer1": "l1", "module": "m"})) == \
        ["m.linear.weight", "m.linear2.bias", "l1.0.conv1.weight", "other"]  # the longest prefix wins
    assert mio.rename_keys(state, {"module.": ""}) == {"linear.weight": 1, "linear2.bias": 2,
                                                       "layer1.0.conv1.weight": 3, "other": 4}
    assert mio.rename_keys(state, lambda k: None if k == "other" else k.upper()) == \
        {"MODULE.LINEAR.WEIGHT": 1, "MODULE.LINEAR2.BIAS": 2, "MODULE.LAYER1.0.CONV1.WEIGHT": 3}
    with pytest.raises(ValueError, match="two entries become 'x'"):
        mio.rename_keys(state, lambda k: "x")


def test_guess_renames():
    model_keys = ["conv1.weight", "fc.weight", "fc.bias", "bn1.num_batches_tracked"]
    assert mio.guess_renames(["conv1.weight", "linear.weight", "linear.bias"], model_keys) == {"linear": "fc"}
    assert mio.guess_renames(["conv1.weight", "linear.weight"], model_keys) == {}
    assert mio.guess_renames(model_keys, model_keys) == {}


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_saved_dataparallel_checkpoint_matches_torch_outputs(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    from ..torch_reference import CifarResNet

    torch.manual_seed(0)
    net = CifarResNet([3, 3, 3], num_classes=10, shortcut="A")  # akamaster's net, classifier renamed fc
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    net.eval()
    published = collections.OrderedDict(
        (k.replace("fc.", "linear."), v) for k, v in torch.nn.DataParallel(net).state_dict().items()
        if not k.endswith("num_batches_tracked"))
    path = tmp_path / "resnet20.th"
    torch.save({"best_prec1": torch.tensor(91.73), "state_dict": published}, path,
               _use_new_zipfile_serialization=zip_format)
    state = mio.rename_keys(mio.load_state_dict(path), {"linear": "fc"}, strip_prefix="module.")
    for name, value in published.items():
        key = name.replace("module.", "", 1).replace("linear.", "fc.")
        np.testing.assert_array_equal(state[key], value.numpy(), err_msg=name)
    model = models.create("resnet20", num_classes=10).eval()
    model.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    with mr.no_grad():
        np.testing.assert_allclose(model(mr.tensor(x)).numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.torch
def test_torch_itself_reads_the_handwritten_pre_1_0_files(tmp_path, rng):
    """The 0.3-style writer used by the torch-free tests produces what torch.load accepts."""
    torch = pytest.importorskip("torch")
    state = {"w": rng.standard_normal((3, 2)).astype(np.float32), "n": np.array([5], np.int64)}
    path = tmp_path / "old.pth"
    write_legacy_state(path, {"state_dict": state})
    theirs = torch.load(path, weights_only=True)["state_dict"]
    for name, value in state.items():
        np.testing.assert_array_equal(theirs[name].numpy(), value)
