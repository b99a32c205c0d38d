"""Residual networks and their relatives: blocks, builders, a registry and model statistics.

Example:
    >>> import minires.models as models
    >>> model = models.create("resnet20", num_classes=10, shortcut="A")
    >>> models.available()[:3]
    ['resnet18', 'resnet34', 'resnet50']

- Blocks (:mod:`minires.models.blocks`): ``BasicBlock``, ``Bottleneck``, ``PreActBasicBlock``,
  ``PreActBottleneck``, ``PlainBasicBlock``, ``PlainBottleneck``; each exposes
  ``residual_branch(x)`` (F), ``shortcut(x)`` (S, ``None`` when plain) and
  ``post_activation`` (ReLU or Identity) with ``forward(x) == post_activation(F(x) + S(x))``.
- Models: ImageNet ``resnet18/34/50/101/152``, ``wide_resnet50_2``, ``resnext50_32x4d``,
  ``se_resnet50``, ``densenet121`` (torchvision keys and parameter counts); CIFAR
  ``resnet20/32/44/56/110/1202``, ``plain20/32/44/56/110``, ``preact_resnet20/56/110/164/1001``,
  ``se_resnet20/56/110``, ``resnext29_8x64d``, ``densenet_bc_100_12``. Every model has
  ``forward_features(x)`` (pooled features), ``forward_stages(x)`` (``OrderedDict`` of
  ``'stem'`` and per-stage feature maps in one pass) and ``forward_head(features)``.
- Statistics (:mod:`minires.models.summary`): ``count_parameters``, ``model_depth``,
  ``count_macs`` (forward hooks on a one-image pass), ``summary()`` (rows) and
  ``summary_table()`` (the text table printed by ``minires models``).
"""

from .blocks import (BLOCKS, BasicBlock, Bottleneck, PlainBasicBlock, PlainBottleneck, PreActBasicBlock,
                     PreActBottleneck, ResidualBlock)
from .densenet import DenseBlock, DenseLayer, DenseNet, Transition, densenet121, densenet_bc_100_12
from .layers import SEModule, ShortcutA, conv1x1, conv3x3, make_shortcut
from .registry import IMAGENET_MODELS, MODELS, available, check_name, create, input_size
from .resnet import (ResNet, cifar_resnet, init_weights, plain20, plain32, plain44, plain56, plain110,
                     preact_resnet20, preact_resnet56, preact_resnet110, preact_resnet164, preact_resnet1001,
                     resnet18, resnet20, resnet32, resnet34, resnet44, resnet50, resnet56, resnet101, resnet110,
                     resnet152, resnet1202, resnext29_8x64d, resnext50_32x4d, se_resnet20, se_resnet50,
                     se_resnet56, se_resnet110, wide_resnet50_2)
from .summary import count_macs, count_parameters, model_depth, summary, summary_table

__all__ = [
    "ResidualBlock", "BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck", "PlainBasicBlock",
    "PlainBottleneck", "BLOCKS", "SEModule", "ShortcutA", "conv1x1", "conv3x3", "make_shortcut", "ResNet",
    "DenseNet", "DenseBlock", "DenseLayer", "Transition", "cifar_resnet", "init_weights", "create",
    "available", "check_name", "input_size", "MODELS", "IMAGENET_MODELS", "count_parameters", "count_macs", "model_depth",
    "summary", "summary_table", *MODELS,
]
