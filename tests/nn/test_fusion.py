"""Block-level fusion (minires.nn.fusion): fused and module-by-module runs give the same values,
gradients and running statistics; the fused graph has no separate ReLU; hooks, replaced
modules, set_fusion and MINIRES_FUSION turn it off."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minires as mr
import minires.models as models
from minires import nn
from minires.nn.fusion import fusable
from tests.helpers import graph_ops, randomise_bn

TIGHT = dict(rtol=1e-10, atol=1e-12)
REPO = Path(__file__).resolve().parents[2]


def _step(model, x, fused, set_fusion, training=True):
    """One forward/backward of a copy of ``model`` with fusion on or off.

    Returns ``(out, x.grad, {param: grad}, {buffer: value}, graph op counts)``.
    """
    set_fusion(fused)
    model = copy.deepcopy(model).train(training)
    xt = mr.tensor(x, requires_grad=True)
    out = model(xt)
    ops = graph_ops(out)
    cotangent = np.random.default_rng(7).standard_normal(out.shape)
    out.backward(cotangent)
    grads = {name: p.grad for name, p in model.named_parameters()}
    buffers = {name: b.numpy().copy() for name, b in model.named_buffers()}
    return out.numpy(), xt.grad, grads, buffers, ops


def _assert_same(fused, unfused):
    out, gx, grads, buffers, _ = fused
    ref_out, ref_gx, ref_grads, ref_buffers, _ = unfused
    assert 0 < (ref_out > 0).mean() < 1 or ref_out.ndim == 2   # a ReLU with both sides (blocks)
    np.testing.assert_allclose(out, ref_out, **TIGHT)
    np.testing.assert_allclose(gx, ref_gx, **TIGHT)
    assert grads.keys() == ref_grads.keys()
    for name, ref in ref_grads.items():
        assert grads[name] is not None and ref is not None, name
        np.testing.assert_allclose(grads[name], ref, **TIGHT, err_msg=name)
    assert buffers.keys() == ref_buffers.keys()
    for name, ref in ref_buffers.items():
        np.testing.assert_allclose(buffers[name], ref, **TIGHT, err_msg=name)


BLOCKS = {
    "basic-identity": lambda: models.BasicBlock(8, 8),
    "basic-A": lambda: models.BasicBlock(8, 16, 2, shortcut="A"),
    "basic-B-scaled": lambda: models.BasicBlock(8, 16, 2, shortcut="B", shortcut_scale=0.5),
    "bottleneck-B": lambda: models.Bottleneck(8, 4, 2, shortcut="B"),
    "bottleneck-C": lambda: models.Bottleneck(16, 4, 1, shortcut="C"),
    "basic-se": lambda: models.BasicBlock(8, 8, se_reduction=4),
    "preact-basic": lambda: models.PreActBasicBlock(8, 8),
    "preact-basic-B": lambda: models.PreActBasicBlock(8, 16, 2, shortcut="B"),
    "plain-basic": lambda: models.PlainBasicBlock(8, 8),
}


def _block_case(name, rng):
    block = randomise_bn(BLOCKS[name]().double(), rng)
    x = rng.standard_normal((3, block.in_planes, 6, 6))
    return block, x


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_fused_equals_unfused(name, training, rng, fusion):
    block, x = _block_case(name, rng)
    fused = _step(block, x, True, fusion, training)
    unfused = _step(block, x, False, fusion, training)
    _assert_same(fused, unfused)
    ops, ref_ops = fused[4], unfused[4]
    relu_modules = ref_ops["ReLU"]
    assert relu_modules >= 1
    if name == "basic-se":                                  # the SE gate sits between bn2 and the addition
        assert ops["ReLU"] < relu_modules
    else:
        assert ops["ReLU"] == 0, ops                        # every bn -> relu pair ran as one node
    assert ops["BatchNorm"] == ref_ops["BatchNorm"]
    if isinstance(block, (models.BasicBlock, models.Bottleneck)) and block.skip and name != "basic-se":
        assert ref_ops["Add"] == 1 and ops["Add"] == 0     # the addition is inside the fused node


@pytest.mark.parametrize("name", ["basic-identity", "basic-B-scaled", "bottleneck-B", "preact-basic-B"])
def test_block_inference_under_no_grad(name, rng, fusion):
    block, x = _block_case(name, rng)
    block.eval()
    outs = []
    for fused in (True, False):
        fusion(fused)
        with mr.no_grad():
            outs.append(block(mr.tensor(x)).numpy())
    np.testing.assert_allclose(outs[0], outs[1], **TIGHT)


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet20"])
def test_whole_model_fused_equals_unfused(name, rng, fusion):
    model = randomise_bn(models.create(name, num_classes=5).double(), rng)
    x = rng.standard_normal((2, 3, 12, 12))
    fused = _step(model, x, True, fusion)
    unfused = _step(model, x, False, fusion)
    _assert_same(fused, unfused)
    assert fused[4]["ReLU"] == 0 and unfused[4]["ReLU"] > 0
    assert fused[4]["BatchNorm"] == unfused[4]["BatchNorm"]


# --- what turns fusion off ----------------------------------------------------------------

@pytest.mark.parametrize("module_name", ["bn2", "post_activation"])
def test_forward_hook_runs_and_disables_the_fused_tail(module_name, rng, fusion):
    block, x = _block_case("basic-identity", rng)
    seen = []

    def hook(module, args, out):
        seen.append(module)
        return out * 2.0                                      # a replaced output must be honoured

    getattr(block, module_name).register_forward_hook(hook)
    fused = _step(block, x, True, fusion)
    assert len(seen) == 1
    unfused = _step(block, x, False, fusion)
    assert len(seen) == 2
    _assert_same(fused, unfused)
    assert fused[4]["ReLU"] == 1 and fused[4]["Add"] == 1     # the tail ran module by module; bn1 still fused
    assert unfused[4]["ReLU"] == 2


def test_fusable_rules(fusion):
    bn, relu = nn.BatchNorm2d(3), nn.ReLU()
    fusion(True)
    assert nn.fusion_enabled() and fusable(bn, relu)
    for register in (bn.register_forward_hook, bn.register_forward_pre_hook, bn.register_full_backward_hook,
                     relu.register_forward_hook, relu.register_forward_pre_hook):
        handle = register(lambda *a: None)
        assert not fusable(bn, relu)
        handle.remove()
        assert fusable(bn, relu)

    class MyBN(nn.BatchNorm2d):
        pass

    assert not fusable(MyBN(3), relu)
    assert not fusable(bn, nn.Identity())
    patched = nn.BatchNorm2d(3)
    patched.forward = lambda x: x
    assert not fusable(patched, relu)
    fusion(False)
    assert not nn.fusion_enabled() and not fusable(bn, relu)


def test_pre_and_backward_hooks_on_bn1_fire(rng, fusion):
    block, x = _block_case("basic-identity", rng)
    calls = []
    block.bn1.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    block.bn1.register_full_backward_hook(lambda m, gi, go: calls.append("backward"))
    fused = _step(block, x, True, fusion)
    assert calls == ["pre", "backward"]
    _assert_same(fused, _step(block, x, False, fusion))


def test_instance_forward_override_is_called(rng, fusion):
    block, x = _block_case("basic-identity", rng)
    calls = []
    real = block.post_activation.forward
    block.post_activation.forward = lambda t: calls.append(1) or real(t)
    fused = _step(block, x, True, fusion)
    assert len(calls) == 1
    _assert_same(fused, _step(block, x, False, fusion))


def test_replaced_modules(rng, fusion):
    block, x = _block_case("basic-identity", rng)
    block.bn1 = nn.Identity()
    _assert_same(_step(block, x, True, fusion), _step(block, x, False, fusion))
    block.post_activation = nn.Identity()                     # no final ReLU: nothing to fuse the tail with
    out, *_ = fused = _step(block, x, True, fusion)
    _assert_same(fused, _step(block, x, False, fusion))
    assert (out < 0).any()


@pytest.mark.parametrize("value, expected", [("0", False), ("off", False), ("1", True)])
def test_environment_variable_read_at_import(value, expected):
    env = dict(os.environ, MINIRES_FUSION=value)
    result = subprocess.run([sys.executable, "-c", "import minires.nn as nn; print(nn.fusion_enabled())"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(expected)


def test_empty_batch_in_eval_mode_like_pytorch():
    # an empty batch runs in eval mode (fused or not, with or without a graph), as in PyTorch;
    # training mode refuses it (one value per channel is too few for batch statistics)
    import minires as mr
    model = mr.models.create("resnet20").eval()
    x = mr.tensor(np.zeros((0, 3, 32, 32), np.float32), requires_grad=True)
    for fused in (True, False):
        nn.set_fusion(fused)
        try:
            with mr.no_grad():
                assert model(x).shape == (0, 10)
            out = model(x)
            out.sum().backward()
            assert out.shape == (0, 10) and x.grad.shape == (0, 3, 32, 32)
        finally:
            nn.set_fusion(True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model.train()(x)
