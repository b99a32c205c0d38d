"""ResNet assembly (ImageNet and CIFAR), with torchvision's module names and initialisation.

One class, :class:`ResNet`, builds every variant from a block class, the number of blocks
per stage, a stem (``'imagenet'``: 7x7/2 conv + BN + ReLU + 3x3/2 max-pool; ``'cifar'``:
3x3 conv + BN + ReLU) and the stage widths. State-dict keys are torchvision's
(``conv1``, ``bn1``, ``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ``fc``),
so torchvision checkpoints load with no renaming.
"""

from __future__ import annotations

from collections import OrderedDict

import minires.functional as F
from minires import nn
from minires.autograd import Tensor
from minires.nn.fusion import bn_relu, conv_bn_relu

from .blocks import BasicBlock, Bottleneck, PlainBasicBlock, PreActBasicBlock, PreActBottleneck, ResidualBlock


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """The ResNet initialisation: He normal (fan_out, ReLU) convs, BN weight 1 / bias 0.

    Linear layers keep PyTorch's default (already applied by ``nn.Linear``).

    Args:
        model: any module; every ``Conv2d`` and ``BatchNorm2d`` inside is re-initialised.
        zero_init_residual: also zero the last scale of every residual branch
            (:meth:`ResidualBlock.zero_init_residual_`), so each block starts as the identity.

    Raises:
        ValueError: ``zero_init_residual`` on a model whose blocks have no skip connection
            (it would zero the whole signal path).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_residual:
        blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
        if any(not b.skip for b in blocks):
            raise ValueError("zero_init_residual=True needs skip connections; plain blocks would output zeros")
        for block in blocks:
            block.zero_init_residual_()


class ResNet(nn.Module):
    """A residual network: stem, stages of blocks, (final BN-ReLU for pre-activation), pool, fc.

    Args:
        block: the block class (:class:`BasicBlock`, :class:`Bottleneck`, their pre-activation
            or plain versions); all share one constructor signature.
        layers: blocks per stage, e.g. ``[3, 4, 6, 3]`` (ResNet-50) or ``[3, 3, 3]`` (ResNet-20).
        num_classes: outputs of the final ``fc`` layer.
        stem: ``'imagenet'`` or ``'cifar'``.
        widths: ``planes`` of each stage (default 64, 128, 256, 512 / 16, 32, 64).
        stem_width: channels of the stem convolution (default ``widths[0]``).
        shortcut: ``'A'``, ``'B'`` or ``'C'`` (see :mod:`minires.models.layers`).
        shortcut_scale: ``lambda`` multiplying every skip path.
        groups: cardinality of bottleneck 3x3 convolutions (ResNeXt).
        width_per_group: bottleneck width per group (64: ResNet, 128: Wide ResNet-50-2).
        se_reduction: add squeeze-excitation gates with this reduction to every block.
        zero_init_residual: start every residual branch at zero (see :func:`init_weights`).
        in_channels: input image channels.

    Attributes:
        stage_names: ``['layer1', ..., 'layerK']``.
        stage_channels: output channels of each stage.
        num_features: width of the pooled features (the ``fc`` input).

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes)``.
    """

    def __init__(self, block: type[ResidualBlock], layers, num_classes: int = 1000, stem: str = "imagenet",
                 widths=None, stem_width: int | None = None, shortcut: str = "B", shortcut_scale: float = 1.0,
                 groups: int = 1, width_per_group: int = 64, se_reduction: int | None = None,
                 zero_init_residual: bool = False, in_channels: int = 3):
        super().__init__()
        if not (isinstance(block, type) and issubclass(block, ResidualBlock)):
            raise TypeError(f"block must be a ResidualBlock subclass, got {block!r}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        layers = list(layers)
        if widths is None:
            base = 64 if stem == "imagenet" else 16
            widths = [base * 2**i for i in range(len(layers))]
        widths = list(widths)
        if not layers or len(widths) != len(layers) or any(not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"layers must be positive ints, one per stage width; got layers={layers}, widths={widths}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.block, self.layers, self.stem_type = block, layers, stem
        self.groups, self.base_width = groups, width_per_group
        self.in_planes = stem_width or widths[0]
        preact = block.preactivation

        kernel_size, stride, padding = (7, 2, 3) if stem == "imagenet" else (3, 1, 1)
        self.conv1 = nn.Conv2d(in_channels, self.in_planes, kernel_size, stride, padding, bias=False)
        if not preact:  # pre-activation nets start each block with BN-ReLU, so the stem is a bare conv
            self.bn1 = nn.BatchNorm2d(self.in_planes)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else None

        options = dict(shortcut=shortcut, groups=groups, base_width=width_per_group, shortcut_scale=shortcut_scale,
                       se_reduction=se_reduction)
        self.stage_names, self.stage_channels = [], []
        for i, (planes, count) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            stage = [block(self.in_planes, planes, stride, **options)]
            self.in_planes = planes * block.expansion
            stage += [block(self.in_planes, planes, 1, **options) for _ in range(1, count)]
            name = f"layer{i + 1}"
            setattr(self, name, nn.Sequential(*stage))
            self.stage_names.append(name)
            self.stage_channels.append(self.in_planes)
        if preact:
            self.final_bn = nn.BatchNorm2d(self.in_planes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = self.in_planes
        self.fc = nn.Linear(self.in_planes, num_classes)
        init_weights(self, zero_init_residual)

    def _stem(self, x: Tensor) -> Tensor:
        if self.block.preactivation:
            x = self.conv1(x)
        else:
            x = conv_bn_relu(self.conv1, self.bn1, self.relu, x)
        return self.maxpool(x) if self.maxpool is not None else x

    def _pool(self, x: Tensor) -> Tensor:
        if self.block.preactivation:
            x = bn_relu(self.final_bn, self.relu, x)
        return F.flatten(self.avgpool(x), 1)

    def forward_stages(self, x: Tensor) -> OrderedDict:
        """All intermediate feature maps in one pass.

        Returns:
            ``OrderedDict`` with ``'stem'`` (after the stem, incl. max-pool) and each of
            ``stage_names`` (``'layer1'``, ...), e.g. for ResNet-50 at 224: ``layer1`` is
            ``(N, 256, 56, 56)``, ``layer4`` ``(N, 2048, 7, 7)``.
        """
        out = OrderedDict()
        x = out["stem"] = self._stem(x)
        for name in self.stage_names:
            x = out[name] = getattr(self, name)(x)
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features before the classifier, ``(N, num_features)``."""
        x = self._stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self._pool(x)

    def forward_head(self, features: Tensor) -> Tensor:
        """The classifier applied to :meth:`forward_features`' output."""
        return self.fc(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


# ---------------------------------------------------------------------------------------
# ImageNet builders (torchvision's configurations, keys and parameter counts)

def _imagenet(block, layers, num_classes, **kwargs) -> ResNet:
    model = ResNet(block, layers, num_classes=num_classes, stem="imagenet", **kwargs)
    model.default_input_size = (3, 224, 224)
    return model


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-18 (He et al. 2015): BasicBlock x [2, 2, 2, 2]; 11,689,512 parameters at 1000 classes.

    Args:
        num_classes: classifier outputs.
        **kwargs: passed to :class:`ResNet` (``zero_init_residual``, ``shortcut``, ...).
    """
    return _imagenet(BasicBlock, [2, 2, 2, 2], num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-34: BasicBlock x [3, 4, 6, 3]; 21,797,672 parameters. Arguments as :func:`resnet18`."""
    return _imagenet(BasicBlock, [3, 4, 6, 3], num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50: Bottleneck x [3, 4, 6, 3]; 25,557,032 parameters. Arguments as :func:`resnet18`."""
    return _imagenet(Bottleneck, [3, 4, 6, 3], num_classes, **kwargs)


def resnet101(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-101: Bottleneck x [3, 4, 23, 3]; 44,549,160 parameters. Arguments as :func:`resnet18`."""
    return _imagenet(Bottleneck, [3, 4, 23, 3], num_classes, **kwargs)


def resnet152(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-152: Bottleneck x [3, 8, 36, 3]; 60,192,808 parameters. Arguments as :func:`resnet18`."""
    return _imagenet(Bottleneck, [3, 8, 36, 3], num_classes, **kwargs)


def wide_resnet50_2(num_classes: int = 1000, **kwargs) -> ResNet:
    """Wide ResNet-50-2 (Zagoruyko & Komodakis 2016): bottleneck width x2; 68,883,240 parameters."""
    return _imagenet(Bottleneck, [3, 4, 6, 3], num_classes, width_per_group=128, **kwargs)


def resnext50_32x4d(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNeXt-50 32x4d (Xie et al. 2017): 32 groups of width 4; 25,028,904 parameters."""
    return _imagenet(Bottleneck, [3, 4, 6, 3], num_classes, groups=32, width_per_group=4, **kwargs)


def se_resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """SE-ResNet-50 (Hu et al. 2018): ResNet-50 with SE gates (reduction 16); 28,088,024 parameters.

    Keys follow timm's ``seresnet50`` (``layer1.0.se.fc1.weight``, ...).
    """
    return _imagenet(Bottleneck, [3, 4, 6, 3], num_classes, se_reduction=16, **kwargs)


# ---------------------------------------------------------------------------------------
# CIFAR builders (3 stages of 16/32/64 planes, 3x3 stem, no max-pool)

def cifar_resnet(depth: int, block: type[ResidualBlock] = BasicBlock, num_classes: int = 10, shortcut: str = "A",
                 shortcut_scale: float = 1.0, **kwargs) -> ResNet:
    """A CIFAR ResNet of the given depth (He et al. 2015, section 4.2).

    Basic blocks need ``depth = 6n + 2``, bottlenecks ``depth = 9n + 2`` (n blocks per stage).

    Args:
        depth: total weighted layers on the main path.
        block: block class.
        num_classes: classifier outputs.
        shortcut: ``'A'`` (default, parameter-free), ``'B'`` or ``'C'``.
        shortcut_scale: ``lambda`` multiplying the skip path.
        **kwargs: passed to :class:`ResNet`.

    Raises:
        ValueError: ``depth`` does not fit the block type.
    """
    per_block = 3 if block.expansion == 4 else 2
    if not isinstance(depth, int) or depth < 2 + 3 * per_block or (depth - 2) % (3 * per_block):
        raise ValueError(f"{block.__name__} CIFAR ResNets need depth = {3 * per_block}n + 2, got {depth!r}")
    n = (depth - 2) // (3 * per_block)
    model = ResNet(block, [n, n, n], num_classes=num_classes, stem="cifar", shortcut=shortcut,
                   shortcut_scale=shortcut_scale, **kwargs)
    model.default_input_size = (3, 32, 32)
    return model


def _cifar_builder(name, depth, block, default_shortcut="A", se_reduction=None, kind="ResNet"):
    def build(num_classes: int = 10, shortcut: str = default_shortcut, shortcut_scale: float = 1.0, **kwargs):
        if se_reduction is not None:
            kwargs.setdefault("se_reduction", se_reduction)
        return cifar_resnet(depth, block, num_classes=num_classes, shortcut=shortcut,
                            shortcut_scale=shortcut_scale, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"CIFAR {kind}-{depth}: {block.__name__}, {(depth - 2) // (9 if block.expansion == 4 else 6)} "
                     f"blocks per stage, shortcut {default_shortcut!r} by default.\n\n"
                     "    Args:\n        num_classes: classifier outputs (10).\n"
                     "        shortcut: 'A', 'B' or 'C'.\n        shortcut_scale: lambda on the skip path.\n"
                     "        **kwargs: passed to :class:`ResNet`.\n")
    return build


resnet20 = _cifar_builder("resnet20", 20, BasicBlock)
resnet32 = _cifar_builder("resnet32", 32, BasicBlock)
resnet44 = _cifar_builder("resnet44", 44, BasicBlock)
resnet56 = _cifar_builder("resnet56", 56, BasicBlock)
resnet110 = _cifar_builder("resnet110", 110, BasicBlock)
resnet1202 = _cifar_builder("resnet1202", 1202, BasicBlock)
plain20 = _cifar_builder("plain20", 20, PlainBasicBlock, kind="plain net")
plain32 = _cifar_builder("plain32", 32, PlainBasicBlock, kind="plain net")
plain44 = _cifar_builder("plain44", 44, PlainBasicBlock, kind="plain net")
plain56 = _cifar_builder("plain56", 56, PlainBasicBlock, kind="plain net")
plain110 = _cifar_builder("plain110", 110, PlainBasicBlock, kind="plain net")
preact_resnet20 = _cifar_builder("preact_resnet20", 20, PreActBasicBlock, "B", kind="pre-activation ResNet")
preact_resnet56 = _cifar_builder("preact_resnet56", 56, PreActBasicBlock, "B", kind="pre-activation ResNet")
preact_resnet110 = _cifar_builder("preact_resnet110", 110, PreActBasicBlock, "B", kind="pre-activation ResNet")
preact_resnet164 = _cifar_builder("preact_resnet164", 164, PreActBottleneck, "B", kind="pre-activation ResNet")
preact_resnet1001 = _cifar_builder("preact_resnet1001", 1001, PreActBottleneck, "B", kind="pre-activation ResNet")
se_resnet20 = _cifar_builder("se_resnet20", 20, BasicBlock, se_reduction=16, kind="SE-ResNet")
se_resnet56 = _cifar_builder("se_resnet56", 56, BasicBlock, se_reduction=16, kind="SE-ResNet")
se_resnet110 = _cifar_builder("se_resnet110", 110, BasicBlock, se_reduction=16, kind="SE-ResNet")


def resnext29_8x64d(num_classes: int = 10, shortcut: str = "B", shortcut_scale: float = 1.0, **kwargs) -> ResNet:
    """CIFAR ResNeXt-29 8x64d (Xie et al. 2017): 3 stages of 3 grouped bottlenecks, 64-wide stem.

    Cardinality 8, 64 channels per group; stage outputs 256 / 512 / 1024; about 34.4M parameters.

    Args:
        num_classes: classifier outputs.
        shortcut: ``'B'`` (default) or ``'C'``; ``'A'`` also works (zero-padding).
        shortcut_scale: ``lambda`` on the skip path.
        **kwargs: passed to :class:`ResNet`.
    """
    model = ResNet(Bottleneck, [3, 3, 3], num_classes=num_classes, stem="cifar", widths=[64, 128, 256],
                   stem_width=64, groups=8, width_per_group=64, shortcut=shortcut,
                   shortcut_scale=shortcut_scale, **kwargs)
    model.default_input_size = (3, 32, 32)
    return model
