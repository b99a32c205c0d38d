"""Small models for the data-parallel tests (each builder has the trainer's ``build_model`` signature)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train"))

from tiny import tiny_model  # noqa: E402


def resnet8(config=None, num_classes=10):
    """A CIFAR ResNet with one basic block per stage: residual blocks with the configured shortcut (option A
    by default; B puts a batch norm on the shortcut), 78k parameters."""
    from minires.models.resnet import cifar_resnet  # noqa: PLC0415

    shortcut = getattr(config, "shortcut", None) or "A"
    return cifar_resnet(8, num_classes=num_classes, shortcut=shortcut)


BUILDERS = {"tiny": tiny_model, "resnet8": resnet8}
