"""Parameter counts, output shapes, stage outputs and the registry, for every builder."""

import numpy as np
import pytest

import minires as mr
import minires.models as models
from minires import nn

# torchvision's published counts at 1000 classes
IMAGENET_COUNTS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "wide_resnet50_2": 68_883_240, "resnext50_32x4d": 25_028_904,
    "densenet121": 7_978_856,
}
# He et al. 2015 / akamaster's table for the option-A CIFAR ResNets at 10 classes
CIFAR_COUNTS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
                "resnet110": 1_727_962, "resnet1202": 19_421_274}
SLOW_BUILDS = {"resnet101", "resnet152", "wide_resnet50_2", "resnet34"}


# ---- independent counts from the architecture definitions (layer by layer) ------------

def conv(cin, cout, k, groups=1, bias=False):
    return cout * (cin // groups) * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def cifar_resnet_count(depth, kind="basic", shortcut="A", num_classes=10, se=None, preact=False,
                       widths=(16, 32, 64), stem=16, groups=1, base_width=64):
    per = 3 if kind == "bottleneck" else 2
    n = (depth - 2) // (3 * per)
    exp = 4 if kind == "bottleneck" else 1
    total = conv(3, stem, 3) + (0 if preact else bn(stem))
    cin = stem
    for i, planes in enumerate(widths):
        for b in range(n):
            stride = 2 if (i > 0 and b == 0) else 1
            cout = planes * exp
            if kind == "basic":
                total += conv(cin, planes, 3) + conv(planes, planes, 3) + bn(planes) + bn(cin if preact else planes)
            else:
                width = int(planes * base_width / 64) * groups
                total += conv(cin, width, 1) + conv(width, width, 3, groups) + conv(width, cout, 1)
                total += bn(cin) + 2 * bn(width) if preact else 2 * bn(width) + bn(cout)
            if se:
                hidden = max(1, cout // se)
                total += conv(cout, hidden, 1, bias=True) + conv(hidden, cout, 1, bias=True)
            if (stride != 1 or cin != cout) and shortcut != "A" or shortcut == "C":
                total += conv(cin, cout, 1) + (0 if preact else bn(cout))
            cin = cout
    if preact:
        total += bn(cin)
    return total + cin * num_classes + num_classes


def densenet_count(growth, blocks, init, num_classes, stem="cifar", bn_size=4):
    total = conv(3, init, 7 if stem == "imagenet" else 3) + (bn(init) if stem == "imagenet" else 0)
    c = init
    for i, layers in enumerate(blocks):
        for _ in range(layers):
            total += bn(c) + conv(c, bn_size * growth, 1) + bn(bn_size * growth) + conv(bn_size * growth, growth, 3)
            c += growth
        if i < len(blocks) - 1:
            total += bn(c) + conv(c, c // 2, 1)
            c //= 2
    return total + bn(c) + c * num_classes + num_classes


def expected_count(name, num_classes):
    if name in CIFAR_COUNTS or name.startswith("plain"):
        return cifar_resnet_count(int(name.removeprefix("resnet").removeprefix("plain")), num_classes=num_classes)
    if name.startswith("preact_resnet"):
        depth = int(name.removeprefix("preact_resnet"))
        return cifar_resnet_count(depth, "bottleneck" if depth in (164, 1001) else "basic", "B", num_classes,
                                  preact=True)
    if name.startswith("se_resnet") and name != "se_resnet50":
        return cifar_resnet_count(int(name.removeprefix("se_resnet")), num_classes=num_classes, se=16)
    if name == "resnext29_8x64d":
        return cifar_resnet_count(29, "bottleneck", "B", num_classes, widths=(64, 128, 256), stem=64, groups=8,
                                  base_width=64)
    if name == "densenet_bc_100_12":
        return densenet_count(12, (16, 16, 16), 24, num_classes)
    raise KeyError(name)


def test_independent_count_formulas_reproduce_the_published_numbers():
    for name, count in CIFAR_COUNTS.items():
        assert cifar_resnet_count(int(name.removeprefix("resnet"))) == count
    assert densenet_count(32, (6, 12, 24, 16), 64, 1000, stem="imagenet") == IMAGENET_COUNTS["densenet121"]


# ---- building each model once --------------------------------------------------------

_CACHE = {}


def built(name):
    """Each model is built once per session, at 7 classes (counts are adjusted for the fc)."""
    if name not in _CACHE:
        _CACHE.clear()  # keep at most one large model alive
        _CACHE[name] = models.create(name, num_classes=7)
    return _CACHE[name]


def fc_of(model):
    return model.fc if hasattr(model, "fc") else model.classifier


def count_at(model, num_classes):
    """Parameters the same model would have with ``num_classes`` outputs (only the fc changes)."""
    return models.count_parameters(model) + (num_classes - fc_of(model).out_features) * (model.num_features + 1)


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BUILDS else n for n in names]


@pytest.mark.parametrize("name", _params(models.available("imagenet")))
def test_imagenet_parameter_counts_and_shapes(name):
    model = built(name)
    expected = IMAGENET_COUNTS.get(name, 28_088_024 if name == "se_resnet50" else None)
    assert count_at(model, 1000) == expected
    assert fc_of(model).out_features == 7
    model.eval()
    with mr.no_grad():
        out = model(mr.randn(2, 3, 32, 32))
    assert out.shape == (2, 7) and out.dtype == np.float32
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name", [n for n in models.available("cifar") if n not in ("resnet1202", "preact_resnet1001")])
def test_cifar_parameter_counts_and_shapes(name):
    model = built(name)
    if name in CIFAR_COUNTS:
        assert count_at(model, 10) == CIFAR_COUNTS[name]
    assert models.count_parameters(model) == expected_count(name, 7)
    with mr.no_grad():
        out = model(mr.randn(2, 3, 8, 8))  # train mode BN: batch statistics
    assert out.shape == (2, 7)
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name", ["resnet1202", "preact_resnet1001"])
def test_the_deepest_cifar_models_count_without_a_forward_pass(name):
    model = built(name)
    assert models.count_parameters(model) == expected_count(name, 7)
    if name == "resnet1202":
        assert count_at(model, 10) == 19_421_274


def test_cifar_shortcut_options_change_only_the_projections():
    a, b, c = (models.resnet20(shortcut=s) for s in "ABC")
    assert models.count_parameters(a) == 269_722
    assert models.count_parameters(b) == cifar_resnet_count(20, shortcut="B")
    assert models.count_parameters(c) == cifar_resnet_count(20, shortcut="C")
    keys_b = set(b.state_dict()) - set(a.state_dict())
    assert keys_b == {f"layer{k}.0.downsample.{i}.{p}" for k in (2, 3) for i, p in
                      [(0, "weight"), (1, "weight"), (1, "bias"), (1, "running_mean"), (1, "running_var"),
                       (1, "num_batches_tracked")]}
    assert "layer1.0.downsample.0.weight" in c.state_dict()
    assert set(models.plain20().state_dict()) == set(a.state_dict())
    with pytest.raises(ValueError, match="'A', 'B', 'C'"):
        models.resnet20(shortcut="D")


def test_cifar_keys_follow_the_documented_scheme():
    keys = list(models.resnet20().state_dict())
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked"]
    assert "layer3.2.conv2.weight" in keys and "layer1.0.bn2.running_var" in keys
    assert keys[-2:] == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("name, stage_shapes", [
    ("resnet20", {"stem": (2, 16, 16, 16), "layer1": (2, 16, 16, 16), "layer2": (2, 32, 8, 8),
                  "layer3": (2, 64, 4, 4)}),
    ("preact_resnet164", {"stem": (2, 16, 16, 16), "layer1": (2, 64, 16, 16), "layer2": (2, 128, 8, 8),
                          "layer3": (2, 256, 4, 4)}),
    ("resnet18", {"stem": (2, 64, 8, 8), "layer1": (2, 64, 8, 8), "layer2": (2, 128, 4, 4),
                  "layer3": (2, 256, 2, 2), "layer4": (2, 512, 1, 1)}),
    ("densenet_bc_100_12", {"stem": (2, 24, 16, 16), "denseblock1": (2, 216, 16, 16),
                            "denseblock2": (2, 300, 8, 8), "denseblock3": (2, 342, 4, 4)}),
])
def test_forward_stages_features_and_head_agree(name, stage_shapes):
    model = models.create(name, num_classes=5).eval()
    x = mr.randn(2, 3, 16, 16) if name != "resnet18" else mr.randn(2, 3, 32, 32)
    with mr.no_grad():
        stages = model.forward_stages(x)
        features = model.forward_features(x)
        logits = model(x)
    assert {k: v.shape for k, v in stages.items()} == stage_shapes
    assert features.shape == (2, model.num_features)
    np.testing.assert_allclose(model.forward_head(features).numpy(), logits.numpy(), rtol=1e-6, atol=1e-6)
    last = stages[list(stages)[-1]]
    if name.startswith("preact"):
        last = model.relu(model.final_bn(last))
    elif name.startswith("densenet"):
        last = model.relu(model.features.norm5(last))
    np.testing.assert_allclose(last.numpy().mean(axis=(2, 3)), features.numpy(), rtol=1e-5, atol=1e-6)
    if hasattr(model, "stage_channels"):
        assert model.stage_channels == [stage_shapes[k][1] for k in model.stage_names]


def test_registry_is_explicit_and_reports_bad_names_and_arguments():
    assert models.available() == list(models.MODELS)
    assert set(models.available("imagenet")) | set(models.available("cifar")) == set(models.MODELS)
    assert not set(models.available("imagenet")) & set(models.available("cifar"))
    assert len(models.available()) == 30
    with pytest.raises(ValueError, match="unknown model 'resnet21'.*did you mean.*resnet20"):
        models.create("resnet21")
    models.check_name("resnet20")  # the one name check the trainer and the CLI use too
    with pytest.raises(ValueError, match="lists the 30 available: resnet18, resnet34"):
        models.check_name("plain57")
    with pytest.raises(TypeError, match=r"create\('resnet20', \.\.\.\)"):
        models.create("resnet20", bogus=1)
    with pytest.raises(ValueError, match="num_classes"):
        models.create("resnet20", num_classes=0)
    with pytest.raises(ValueError, match="dataset"):
        models.available("mnist")
    with pytest.raises(ValueError, match="6n \\+ 2"):
        models.cifar_resnet(21)
    with pytest.raises(ValueError, match="9n \\+ 2"):
        models.cifar_resnet(30, models.PreActBottleneck)
    assert models.input_size("resnet50") == (3, 224, 224) and models.input_size("resnet20") == (3, 32, 32)


def test_models_run_in_float64_and_report_dtype():
    model = models.resnet20(num_classes=3).double()
    out = model(mr.randn(2, 3, 8, 8, dtype=mr.float64))
    assert out.dtype == np.float64
    with pytest.raises(TypeError):
        model(mr.randn(2, 3, 8, 8))  # float32 input into a float64 model: no silent casting


def test_models_accept_a_different_input_channel_count():
    model = models.ResNet(models.BasicBlock, [1, 1], stem="cifar", in_channels=1, num_classes=4)
    assert model(mr.randn(2, 1, 8, 8)).shape == (2, 4)
    assert isinstance(model.fc, nn.Linear)
