"""DenseNet (Huang et al. 2017) with torchvision's module names: ImageNet DenseNet-121, CIFAR DenseNet-BC.

Keys: ``features.conv0``, ``features.norm0``, ``features.denseblock1.denselayer1.norm1 /
conv1 / norm2 / conv2``, ``features.transition1.norm / conv``, ``features.norm5``,
``classifier``, exactly as torchvision's ``densenet121``.
"""

from __future__ import annotations

from collections import OrderedDict

import minires.functional as F
from minires import nn
from minires.autograd import Tensor
from minires.nn.fusion import bn_relu


class DenseLayer(nn.Module):
    """Bottleneck dense layer: ``BN-ReLU-conv1x1 (bn_size * k) - BN-ReLU-conv3x3 (k)``.

    Args:
        in_channels: channels of the concatenated input.
        growth_rate: ``k``, the new channels this layer contributes.
        bn_size: bottleneck multiplier (4 in DenseNet-BC).

    Shape:
        ``(N, in_channels, H, W) -> (N, growth_rate, H, W)`` (the block concatenates).
    """

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int = 4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(bn_relu(self.norm1, self.relu1, x))
        return self.conv2(bn_relu(self.norm2, self.relu2, out))


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; layer ``i`` sees the concatenation of the input and all earlier outputs.

    Layers are children ``denselayer1 ... denselayerL`` (torchvision's names).

    Shape:
        ``(N, C, H, W) -> (N, C + num_layers * growth_rate, H, W)``.
    """

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int = 4):
        super().__init__()
        self.num_layers = num_layers
        for i in range(num_layers):
            setattr(self, f"denselayer{i + 1}", DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size))
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for i in range(self.num_layers):
            layer = getattr(self, f"denselayer{i + 1}")
            features.append(layer(F.cat(features, axis=1) if len(features) > 1 else x))
        return F.cat(features, axis=1)


class Transition(nn.Sequential):
    """Between dense blocks: ``BN-ReLU-conv1x1 (compress) - avgpool 2x2``; children ``norm, relu, conv, pool``.

    Shape:
        ``(N, C_in, H, W) -> (N, C_out, H / 2, W / 2)``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """DenseNet-BC: stem, dense blocks joined by compressing transitions, final BN-ReLU, pool, classifier.

    Args:
        growth_rate: ``k``.
        block_config: dense layers per block, e.g. ``(6, 12, 24, 16)`` for DenseNet-121.
        num_init_features: channels of the stem convolution.
        bn_size: bottleneck multiplier.
        compression: transition output fraction ``theta`` (0.5 in DenseNet-BC).
        num_classes: classifier outputs.
        stem: ``'imagenet'`` (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) or ``'cifar'`` (3x3 conv).
        in_channels: input image channels.

    Attributes:
        stage_names: ``['denseblock1', ...]``; :meth:`forward_stages` returns their outputs.
        num_features: channels entering the classifier.

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes)``.
    """

    def __init__(self, growth_rate: int = 32, block_config=(6, 12, 24, 16), num_init_features: int = 64,
                 bn_size: int = 4, compression: float = 0.5, num_classes: int = 1000, stem: str = "imagenet",
                 in_channels: int = 3):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must lie in (0, 1], got {compression}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        layers = OrderedDict()
        if stem == "imagenet":
            layers["conv0"] = nn.Conv2d(in_channels, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)
            layers["norm0"] = nn.BatchNorm2d(num_init_features)
            layers["relu0"] = nn.ReLU()
            layers["pool0"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:  # DenseNet-BC on CIFAR: one 3x3 convolution, BN-ReLU happens inside the first layer
            layers["conv0"] = nn.Conv2d(in_channels, num_init_features, kernel_size=3, padding=1, bias=False)
        self.features = nn.Sequential(layers)
        self.stem_names = list(layers)
        channels = num_init_features
        self.stage_names = []
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, channels, growth_rate, bn_size)
            self.features.add_module(f"denseblock{i + 1}", block)
            self.stage_names.append(f"denseblock{i + 1}")
            channels = block.out_channels
            if i != len(block_config) - 1:
                out = int(channels * compression)
                self.features.add_module(f"transition{i + 1}", Transition(channels, out))
                channels = out
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():  # torchvision's DenseNet init
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward_stages(self, x: Tensor) -> OrderedDict:
        """``'stem'`` and every dense block's output (before its transition) in one pass."""
        out = OrderedDict()
        for name in self.stem_names:
            x = self.features.get_submodule(name)(x)
        out["stem"] = x
        for i, name in enumerate(self.stage_names):
            x = out[name] = self.features.get_submodule(name)(x)
            if i + 1 < len(self.stage_names):
                x = self.features.get_submodule(f"transition{i + 1}")(x)
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features ``relu(norm5(features(x)))`` averaged over space, ``(N, num_features)``."""
        x = self.relu(self.features(x))
        return F.flatten(self.avgpool(x), 1)

    def forward_head(self, features: Tensor) -> Tensor:
        """The classifier applied to :meth:`forward_features`' output."""
        return self.classifier(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.forward_features(x))


def densenet121(num_classes: int = 1000, **kwargs) -> DenseNet:
    """DenseNet-121 (k=32, blocks 6/12/24/16, 64-channel stem); 7,978,856 parameters, torchvision keys.

    Args:
        num_classes: classifier outputs.
        **kwargs: passed to :class:`DenseNet`.
    """
    model = DenseNet(32, (6, 12, 24, 16), 64, num_classes=num_classes, stem="imagenet", **kwargs)
    model.default_input_size = (3, 224, 224)
    return model


def densenet_bc_100_12(num_classes: int = 10, **kwargs) -> DenseNet:
    """CIFAR DenseNet-BC, depth 100, k=12: 3 blocks of 16 bottleneck layers, 24-channel stem, theta=0.5.

    Args:
        num_classes: classifier outputs.
        **kwargs: passed to :class:`DenseNet`.
    """
    model = DenseNet(12, (16, 16, 16), 24, num_classes=num_classes, stem="cifar", **kwargs)
    model.default_input_size = (3, 32, 32)
    return model
