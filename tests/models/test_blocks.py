"""Block anatomy (residual_branch / shortcut / post_activation), shortcuts, and initialisation."""

import math

import numpy as np
import pytest

import minires as mr
import minires.models as models
from minires import nn
from minires.models.layers import ShortcutA, make_shortcut
from tests.helpers import randomise_bn

ORIGINAL = [models.BasicBlock, models.Bottleneck]
PREACT = [models.PreActBasicBlock, models.PreActBottleneck]
PLAIN = [models.PlainBasicBlock, models.PlainBottleneck]


@pytest.mark.parametrize("block_cls", ORIGINAL + PREACT + PLAIN, ids=lambda c: c.__name__)
@pytest.mark.parametrize("stride, shortcut, scale", [(1, "B", 1.0), (2, "B", 1.0), (2, "A", 0.5), (1, "C", 2.0)])
def test_forward_is_post_activation_of_branch_plus_shortcut(rng, block_cls, stride, shortcut, scale):
    in_planes = 8
    block = block_cls(in_planes, 4 if block_cls.expansion == 4 else 8, stride, shortcut=shortcut, shortcut_scale=scale)
    randomise_bn(block, rng).eval()
    x = mr.tensor(rng.standard_normal((2, in_planes, 6, 6)).astype(np.float32))
    with mr.no_grad():
        out = block(x).numpy()
        branch = block.residual_branch(x)
        skip = block.shortcut(x)
        expected_act = nn.Identity if block_cls in PREACT else nn.ReLU
        assert isinstance(block.post_activation, expected_act)
        if block_cls in PLAIN:
            assert skip is None and block.downsample is None and not block.skip
            expected = block.post_activation(branch).numpy()
        else:
            assert block.skip
            expected = block.post_activation(branch + skip).numpy()
    assert branch.shape == out.shape == (2, block.out_planes, 6 // stride, 6 // stride)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("block_cls", ORIGINAL + PREACT + PLAIN, ids=lambda c: c.__name__)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_forward_with_an_se_gate_is_the_anatomy_too(rng, block_cls, training):
    # forward (the figure, fused) and residual_branch / shortcut (the anatomy) are written
    # separately in each block: they must agree, SE gate included, with a graph too
    # (train mode normalises with the batch statistics, so running the parts again gives the same values)
    block = randomise_bn(block_cls(8, 4 if block_cls.expansion == 4 else 8, 2, shortcut="B", se_reduction=4), rng)
    block.double().train(training)
    x = mr.tensor(rng.standard_normal((2, 8, 6, 6)), requires_grad=True)
    out = block(x).numpy()
    branch, skip = block.residual_branch(x), block.shortcut(x)
    expected = block.post_activation(branch if skip is None else branch + skip).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_shortcut_contents_for_each_option(rng):
    x = mr.tensor(rng.standard_normal((2, 8, 6, 6)).astype(np.float32))
    ident = models.BasicBlock(8, 8, shortcut="B", shortcut_scale=0.5)
    assert ident.downsample is None
    np.testing.assert_allclose(ident.shortcut(x).numpy(), 0.5 * x.numpy())
    a = models.BasicBlock(8, 16, 2, shortcut="A")
    s = a.shortcut(x).numpy()
    assert s.shape == (2, 16, 3, 3)
    np.testing.assert_array_equal(s[:, :4], 0)
    np.testing.assert_array_equal(s[:, 12:], 0)
    np.testing.assert_array_equal(s[:, 4:12], x.numpy()[:, :, ::2, ::2])
    assert list(a.state_dict()) == list(models.BasicBlock(8, 8, shortcut="A").state_dict())  # A adds no keys
    b = models.BasicBlock(8, 16, 2, shortcut="B")
    assert isinstance(b.downsample, nn.Sequential) and len(b.downsample) == 2
    assert b.downsample[0].stride == (2, 2) and b.downsample[0].kernel_size == (1, 1)
    c = models.BasicBlock(8, 8, 1, shortcut="C")
    assert c.downsample is not None
    pre = models.PreActBasicBlock(8, 16, 2).eval()
    assert len(pre.downsample) == 1  # bare conv: the skip path of a pre-activation net has no BN
    with mr.no_grad():
        a_pre = pre.relu(pre.bn1(x))
        np.testing.assert_allclose(pre.shortcut(x).numpy(), pre.downsample(a_pre).numpy(), rtol=1e-6)
    pre_a = models.PreActBasicBlock(8, 16, 2, shortcut="A")
    np.testing.assert_array_equal(pre_a.shortcut(x).numpy()[:, 4:12], x.numpy()[:, :, ::2, ::2])


def test_shortcut_a_pads_odd_channel_differences_and_refuses_shrinking(rng):
    x = mr.tensor(rng.standard_normal((1, 3, 5, 5)).astype(np.float32))
    y = ShortcutA(3, 8, 2)(x).numpy()
    assert y.shape == (1, 8, 3, 3)
    np.testing.assert_array_equal(y[:, 2:5], x.numpy()[:, :, ::2, ::2])
    assert not y[:, :2].any() and not y[:, 5:].any()
    with pytest.raises(ValueError, match="only add channels"):
        ShortcutA(8, 4)
    assert make_shortcut("b", 8, 8, 1) is None


def test_block_argument_errors():
    with pytest.raises(ValueError, match="groups=1 and base_width=64"):
        models.BasicBlock(8, 8, groups=2)
    with pytest.raises(ValueError, match="in_planes must be a positive int"):
        models.Bottleneck(0, 8)
    with pytest.raises(ValueError, match="shortcut must be one of"):
        models.Bottleneck(8, 8, shortcut="Z")
    with pytest.raises(ValueError, match="SE reduction"):
        models.BasicBlock(8, 8, se_reduction=0)
    with pytest.raises(TypeError, match="ResidualBlock subclass"):
        models.ResNet(nn.Conv2d, [1])


def test_gradients_reach_both_paths_of_a_block(rng):
    block = models.BasicBlock(4, 8, 2, shortcut="A")
    x = mr.tensor(rng.standard_normal((2, 4, 6, 6)).astype(np.float32), requires_grad=True)
    block(x).sum().backward()
    assert all(p.grad is not None for p in block.parameters())
    plain = models.PlainBasicBlock(4, 8, 2)
    x2 = mr.tensor(x.numpy(), requires_grad=True)
    plain.load_state_dict(block.state_dict())
    plain(x2).sum().backward()
    assert not np.allclose(x.grad, x2.grad)  # the skip adds its own gradient path


# ---- initialisation ----------------------------------------------------------------------

def test_he_init_for_convs_unit_bn_and_default_linear():
    mr.manual_seed(0)
    model = models.resnet50()
    w = model.layer4[0].conv2.weight.numpy()  # 512 x 512 x 3 x 3
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert abs(w.std() / math.sqrt(2.0 / fan_out) - 1) < 0.01
    assert abs(w.mean()) < 1e-3
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight.numpy() == 1).all() and (m.bias.numpy() == 0).all()
            assert (m.running_mean.numpy() == 0).all() and (m.running_var.numpy() == 1).all()
    bound = 1 / math.sqrt(model.fc.in_features)  # PyTorch's Linear default: U(-1/sqrt(in), 1/sqrt(in))
    fc_w = model.fc.weight.numpy()
    assert np.abs(fc_w).max() <= bound and np.abs(fc_w).max() > 0.95 * bound
    assert abs(fc_w.std() / (bound / math.sqrt(3)) - 1) < 0.02
    assert np.abs(model.fc.bias.numpy()).max() <= bound


def test_init_is_reproducible_from_the_seed():
    mr.manual_seed(3)
    a = models.resnet20().state_dict()
    mr.manual_seed(3)
    b = models.resnet20().state_dict()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


@pytest.mark.parametrize("name, last", [("resnet20", "bn2.weight"), ("resnet50", "bn3.weight"),
                                        ("preact_resnet20", "conv2.weight"), ("preact_resnet164", "conv3.weight")])
def test_zero_init_residual_zeroes_the_end_of_every_branch(rng, name, last):
    model = models.create(name, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, models.ResidualBlock)]
    assert blocks
    for block in blocks:
        assert not block.get_submodule(last.split(".")[0]).weight.numpy().any()
    block = blocks[1]
    x = mr.tensor(rng.standard_normal((1, block.in_planes, 4, 4)).astype(np.float32))
    with mr.no_grad():
        assert not block.residual_branch(x).numpy().any()
        np.testing.assert_allclose(block(x).numpy(), block.post_activation(block.shortcut(x)).numpy())
    default = models.create(name)
    assert all(b.get_submodule(last.split(".")[0]).weight.numpy().any()
               for b in default.modules() if isinstance(b, models.ResidualBlock))


def test_zero_init_residual_refuses_plain_nets():
    with pytest.raises(ValueError, match="skip connections"):
        models.plain20(zero_init_residual=True)
