"""A tiny CIFAR-shaped model so trainer tests take seconds on 2 CPU cores."""

import minires.nn as nn


def tiny_model(config=None, num_classes=10):
    """conv(3->4) + BN + ReLU + global average pool + linear: about 160 parameters."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def use_tiny_model(monkeypatch):
    import minires.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_model", tiny_model)
