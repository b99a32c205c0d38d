"""Model weights through minires.io: npz / safetensors round trips and torch checkpoints."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minires as mr
import minires.io as mio
import minires.models as models


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_model_round_trip_through_files(tmp_path, rng, ext):
    mr.manual_seed(1)
    source = models.resnet20(shortcut="B")
    with mr.no_grad():  # move running stats and num_batches_tracked
        source(mr.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32)))
    path = tmp_path / f"resnet20{ext}"
    mio.save_state_dict(source, path)
    mr.manual_seed(2)
    target = models.resnet20(shortcut="B")
    assert not np.array_equal(target.conv1.weight.numpy(), source.conv1.weight.numpy())
    target.load_state_dict(mio.load_state_dict(path))
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(np.asarray(target.state_dict()[name]), np.asarray(value), err_msg=name)
    x = mr.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    source.eval()
    target.eval()
    with mr.no_grad():
        np.testing.assert_array_equal(target(x).numpy(), source(x).numpy())


def test_mismatched_weights_are_reported(tmp_path):
    path = tmp_path / "r20.npz"
    mio.save_state_dict(models.resnet20(), path)
    with pytest.raises(ValueError, match="layer1.3"):
        models.resnet32().load_state_dict(mio.load_state_dict(path))


HIDDEN_TORCH_FORWARD = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None
    import numpy as np
    import minires as mr
    import minires.io as mio
    import minires.models as models
    checkpoint, inputs, output = sys.argv[1:4]
    model = models.resnet18(num_classes=10)
    model.load_state_dict(mio.load_state_dict(checkpoint))
    model.eval()
    with mr.no_grad():
        logits = model(mr.tensor(np.load(inputs)))
    np.save(output, logits.numpy())
""")


@pytest.mark.torch
def test_torchvision_style_resnet18_checkpoint_runs_in_minires_without_torch(tmp_path, rng):
    torch = pytest.importorskip("torch")
    from tests import torch_reference as ref

    torch.manual_seed(0)
    net = ref.TVResNet(ref.TVBasicBlock, [2, 2, 2, 2], num_classes=10)
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 3, 32, 32))  # non-trivial running statistics
    net.eval()
    checkpoint = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), checkpoint)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([sys.executable, "-c", HIDDEN_TORCH_FORWARD, str(checkpoint), str(tmp_path / "x.npy"),
                             str(tmp_path / "logits.npy")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = net(torch.tensor(x)).numpy()
    got = np.load(tmp_path / "logits.npy")
    err = np.abs(got - expected).max() / np.abs(expected).max()
    assert err < 2e-5, err
