"""Multiply-adds measured by running the engine, depth, and the summary table."""

import pytest

import minires as mr
import minires.models as models
from minires import nn


def test_count_macs_of_a_tiny_net_matches_the_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, groups=2),
                        nn.Flatten(), nn.Linear(6 * 2 * 2, 5))
    # conv1: 4 x 5 x 5 outputs, 3*3*3 MACs each; conv2: 6 x 2 x 2 outputs, (4/2)*3*3 each; fc: 5 x 24
    expected = 4 * 25 * 27 + 6 * 4 * 18 + 5 * 24
    assert models.count_macs(net, (3, 5, 5)) == expected
    with pytest.raises(ValueError, match="image_size"):
        models.count_macs(net)


def cifar_resnet_macs(n, classes=10):
    """Hand count for option-A CIFAR ResNets at 32x32: 3x3 convs only, plus the fc."""
    total = 16 * 32 * 32 * 3 * 9
    for planes, size, cin in ((16, 32, 16), (32, 16, 16), (64, 8, 32)):
        total += planes * size * size * cin * 9 + (2 * n - 1) * planes * size * size * planes * 9
    return total + classes * 64


@pytest.mark.parametrize("name, n", [("resnet20", 3), ("resnet56", 9)])
def test_cifar_resnet_macs_match_the_hand_count(name, n):
    model = models.create(name)
    model.train()
    assert models.count_macs(model) == cifar_resnet_macs(n)
    assert model.training  # mode restored
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


def test_macs_of_grouped_and_projection_convs():
    model = models.ResNet(models.Bottleneck, [1, 1], stem="cifar", widths=[8, 16], groups=4, width_per_group=8,
                          num_classes=3, shortcut="B")
    size, half = 8, 4
    w1 = int(8 * 8 / 64) * 4  # bottleneck width of stage 1 (planes 8, base width 8, 4 groups) = 4
    w2 = int(16 * 8 / 64) * 4  # stage 2 = 8
    expected = 8 * size * size * 3 * 9  # stem 3x3 conv
    expected += w1 * size * size * 8 + w1 * size * size * (w1 // 4) * 9 + 32 * size * size * w1  # stage 1
    expected += 32 * size * size * 8  # its 1x1 projection 8 -> 32
    expected += w2 * size * size * 32 + w2 * half * half * (w2 // 4) * 9 + 64 * half * half * w2  # stage 2
    expected += 64 * half * half * 32  # strided projection 32 -> 64
    expected += 3 * 64  # fc
    assert models.count_macs(model, (3, size, size)) == expected


def test_published_depths_are_computed_from_the_layers():
    depths = {"resnet20": 20, "plain56": 56, "preact_resnet164": 164, "resnext29_8x64d": 29,
              "densenet_bc_100_12": 100, "se_resnet20": 20}
    for name, depth in depths.items():
        assert models.model_depth(models.create(name)) == depth, name


@pytest.mark.parametrize("name, depth", [("resnet50", 50), ("densenet121", 121)])
def test_imagenet_depths(name, depth):
    assert models.model_depth(models.create(name)) == depth


def test_summary_rows_and_table():
    rows = models.summary(["resnet20", "plain20"])
    assert rows[0] == {"name": "resnet20", "depth": 20, "params": 269_722, "macs": cifar_resnet_macs(3),
                       "input": "3x32x32"}
    assert rows[1]["macs"] == rows[0]["macs"] and rows[1]["params"] == rows[0]["params"]
    table = models.summary_table(["resnet20", "preact_resnet20"], macs=False).splitlines()
    assert table[0].split() == ["model", "depth", "parameters", "MACs/image", "input"]
    assert table[2].split() == ["resnet20", "20", "269,722", "-", "3x32x32"]
    assert len(table) == 4
    assert all(line == line.rstrip() for line in table)


def test_count_parameters_trainable_only():
    model = models.resnet20()
    model.requires_grad_(False)
    model.fc.requires_grad_(True)
    assert models.count_parameters(model, trainable_only=True) == 64 * 10 + 10
    assert models.count_parameters(model) == 269_722


@pytest.mark.slow
def test_imagenet_macs_match_the_published_numbers():
    # torchvision's model cards: 1.81 / 4.09 / 2.83 GFLOPs (multiply-adds) at 224 x 224
    expected = {"resnet18": 1.81e9, "resnet50": 4.09e9, "densenet121": 2.83e9}
    for name, macs in expected.items():
        assert abs(models.count_macs(models.create(name)) / macs - 1) < 0.005, name
    assert mr.is_grad_enabled()


def _measured_by_building_normally(name):
    """The summary row computed the original way: a fully initialised model and a forward pass."""
    model = models.create(name)
    size = models.input_size(name)
    return {"name": name, "depth": models.model_depth(model), "params": models.count_parameters(model),
            "macs": models.count_macs(model, size), "input": "x".join(map(str, size))}


@pytest.mark.parametrize("name", ["resnet50", "resnet20", "se_resnet20", "densenet_bc_100_12"])
def test_summary_built_without_initialisation_gives_the_same_numbers(name):
    # resnet50: ImageNet bottlenecks with projections; resnet20: CIFAR option A; SE gates; dense concatenation
    generator_state = mr.backend.generator().bit_generator.state
    row = models.summary([name])[0]
    assert mr.backend.generator().bit_generator.state == generator_state  # nothing was drawn
    assert row == _measured_by_building_normally(name)

