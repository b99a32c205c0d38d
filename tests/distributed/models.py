"""Small models for the data-parallel tests (each builder has the trainer's ``build_model`` signature)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train"))

from tiny import tiny_model  # noqa: E402


def resnet8(config=None, num_classes=10):
    """A CIFAR ResNet with one basic block per stage: residual blocks and option-A shortcuts, 78k parameters."""
    from minires.models.resnet import cifar_resnet  # noqa: PLC0415

    return cifar_resnet(8, num_classes=num_classes)


BUILDERS = {"tiny": tiny_model, "resnet8": resnet8}
