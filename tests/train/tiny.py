"""A tiny CIFAR-shaped model so trainer tests take seconds on 2 CPU cores."""

import minires.nn as nn


def tiny_model(config=None, num_classes=10):
    """conv(3->4) + BN + ReLU + global average pool + linear: about 160 parameters."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def use_tiny_model(monkeypatch):
    import minires.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_model", tiny_model)


def tiny_residual_model(config=None, num_classes=10):
    """A CIFAR ResNet with one basic block in each of two stages (widths 4 and 8, shortcut A)."""
    from minires.models.blocks import BasicBlock
    from minires.models.resnet import ResNet

    return ResNet(BasicBlock, [1, 1], num_classes=num_classes, stem="cifar", widths=[4, 8], shortcut="A")
