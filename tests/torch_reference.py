"""PyTorch reference models for the parity tests and the benchmarks (torchvision is not installed,
so they are written here). Import only where PyTorch is installed (``pytest.importorskip("torch")``
in tests); minires itself never imports this module. The classes follow the public reference
implementations that minires promises compatibility with:

- ``TVBasicBlock`` / ``TVBottleneck`` / ``TVResNet``: torchvision's ``models/resnet.py``
  layout (stride on the 3x3 of the bottleneck, ``downsample = Sequential(conv1x1, BN)``),
  with an optional SE gate in timm's form (``se.fc1`` / ``se.fc2`` 1x1 convs with bias).
- ``CifarResNet`` / :func:`cifar_resnet`: THE CIFAR ResNet reference, used by the tests and by
  ``benchmarks/speed.py``, ``gpu_speed.py``, ``gradnorm.py`` and ``train_torch_reference.py``:
  the akamaster ``pytorch_resnet_cifar10`` network (option A subsamples and zero-pads),
  options B and C, a skip-free plain variant and a shortcut scale (``CifarBasicBlock``),
  and He et al. 2016's pre-activation blocks as in the fb.resnet.torch / kuangliu code
  (``PreActBlock`` / ``PreActBottleneck``: the shared BN-ReLU feeds the branch and a
  projection, a bare 1x1 conv; final BN-ReLU before pooling), all with minires' keys.
- ``TVDenseNet``: torchvision's ``models/densenet.py`` layout.
"""

from collections import OrderedDict

import torch
import torch.nn as tnn
import torch.nn.functional as TF


class SE(tnn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = tnn.Conv2d(channels, hidden, 1, bias=True)
        self.fc2 = tnn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x):
        s = TF.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


def conv3x3(i, o, stride=1, groups=1):
    return tnn.Conv2d(i, o, 3, stride, 1, groups=groups, bias=False)


def conv1x1(i, o, stride=1):
    return tnn.Conv2d(i, o, 1, stride, bias=False)


class TVBasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, se=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.se = SE(planes, se) if se else None
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.se is not None:
            out = self.se(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class TVBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, se=None):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = tnn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = tnn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * 4)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU(inplace=True)
        self.se = SE(planes * 4, se) if se else None
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class TVResNet(tnn.Module):
    """torchvision's ResNet (ImageNet stem) or the same body on a CIFAR stem."""

    def __init__(self, block, layers, num_classes=1000, groups=1, width_per_group=64, se=None,
                 stem="imagenet", widths=(64, 128, 256, 512), stem_width=None):
        super().__init__()
        self.inplanes = stem_width or widths[0]
        self.groups, self.base_width, self.se = groups, width_per_group, se
        if stem == "imagenet":
            self.conv1 = tnn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
        else:
            self.conv1 = tnn.Conv2d(3, self.inplanes, 3, 1, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(self.inplanes)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1) if stem == "imagenet" else tnn.Identity()
        self.stages = []
        for i, (planes, n) in enumerate(zip(widths, layers)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, planes, n, 1 if i == 0 else 2))
            self.stages.append(f"layer{i + 1}")
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(self.inplanes, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                        tnn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, self.se)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width, se=self.se)
                   for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ShortcutA(tnn.Module):
    """Option A (parameter-free): subsample by ``stride`` and zero-pad the new channels, half
    before and half after (for a doubling, akamaster's ``planes // 4`` on each side)."""

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.stride, self.extra = stride, out_planes - in_planes

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return TF.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class CifarBlock(tnn.Module):
    """What the CIFAR blocks share: the shortcut ``downsample`` (option A, B or C), ``skip`` and ``scale``."""

    preactivation = False

    def _make_shortcut(self, shortcut, in_planes, out_planes, stride, skip, scale):
        self.skip, self.scale, self.option = skip, scale, shortcut
        changes = stride != 1 or in_planes != out_planes
        self.downsample = None
        if not skip or (shortcut != "C" and not changes):
            return
        if shortcut == "A":
            self.downsample = ShortcutA(in_planes, out_planes, stride)
        elif self.preactivation:  # a bare 1x1 convolution: the skip path of a pre-activation net has no BN
            self.downsample = tnn.Sequential(conv1x1(in_planes, out_planes, stride))
        else:
            self.downsample = tnn.Sequential(conv1x1(in_planes, out_planes, stride), tnn.BatchNorm2d(out_planes))

    def shortcut(self, x, preactivated=None):
        """The skip path; projections of pre-activation blocks read ``preactivated``."""
        if self.downsample is not None:
            x = self.downsample(preactivated if self.preactivation and self.option != "A" else x)
        return x if self.scale == 1.0 else self.scale * x


class CifarBasicBlock(CifarBlock):
    """akamaster's BasicBlock with torchvision's names (``downsample`` for the projection of options
    B and C), ``skip=False`` for plain nets and a constant ``scale`` on the shortcut."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1, shortcut="A", skip=True, scale=1.0):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = tnn.BatchNorm2d(planes)
        self._make_shortcut(shortcut, in_planes, planes, stride, skip, scale)

    def forward(self, x):
        out = self.bn2(self.conv2(TF.relu(self.bn1(self.conv1(x)))))
        return TF.relu(out + self.shortcut(x) if self.skip else out)


class PreActBlock(CifarBlock):
    """He et al. 2016 as in fb.resnet.torch / kuangliu: the shared ``relu(bn1(x))`` feeds both the
    branch and a projection shortcut (option A subsamples the raw ``x``); no ReLU after the addition."""

    expansion = 1
    preactivation = True

    def __init__(self, in_planes, planes, stride=1, shortcut="B", skip=True, scale=1.0):
        super().__init__()
        self.bn1 = tnn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self._make_shortcut(shortcut, in_planes, planes, stride, skip, scale)

    def forward(self, x):
        a = TF.relu(self.bn1(x))
        out = self.conv2(TF.relu(self.bn2(self.conv1(a))))
        return out + self.shortcut(x, a) if self.skip else out


class PreActBottleneck(CifarBlock):
    """The pre-activation bottleneck: BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 (x4)."""

    expansion = 4
    preactivation = True

    def __init__(self, in_planes, planes, stride=1, shortcut="B", skip=True, scale=1.0):
        super().__init__()
        self.bn1 = tnn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = tnn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self._make_shortcut(shortcut, in_planes, planes * 4, stride, skip, scale)

    def forward(self, x):
        a = TF.relu(self.bn1(x))
        out = self.conv2(TF.relu(self.bn2(self.conv1(a))))
        out = self.conv3(TF.relu(self.bn3(out)))
        return out + self.shortcut(x, a) if self.skip else out


class CifarResNet(tnn.Module):
    """The CIFAR ResNet (He et al. 2015, 4.2; akamaster's network) with minires' state-dict keys:
    stem ``conv1`` (+ ``bn1``, except for pre-activation blocks), ``layer1..3`` of 16/32/64 planes,
    ``final_bn`` (pre-activation only), global average pooling, ``fc``.

    Args:
        num_blocks: blocks per stage, e.g. ``[3, 3, 3]`` for ResNet-20.
        num_classes: classifier outputs.
        block: :class:`CifarBasicBlock`, :class:`PreActBlock` or :class:`PreActBottleneck`.
        **block_options: ``shortcut`` (``'A'``, ``'B'``, ``'C'``), ``skip``, ``scale``.
    """

    def __init__(self, num_blocks, num_classes=10, block=CifarBasicBlock, **block_options):
        super().__init__()
        self.preactivation = block.preactivation
        self.conv1 = conv3x3(3, 16)
        if not self.preactivation:
            self.bn1 = tnn.BatchNorm2d(16)
        in_planes = 16
        for i, (planes, n) in enumerate(zip((16, 32, 64), num_blocks)):
            layers = []
            for stride in [1 if i == 0 else 2] + [1] * (n - 1):
                layers.append(block(in_planes, planes, stride, **block_options))
                in_planes = planes * block.expansion
            setattr(self, f"layer{i + 1}", tnn.Sequential(*layers))
        if self.preactivation:
            self.final_bn = tnn.BatchNorm2d(in_planes)
        self.fc = tnn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        if not self.preactivation:
            x = TF.relu(self.bn1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.preactivation:
            x = TF.relu(self.final_bn(x))
        return self.fc(torch.flatten(TF.adaptive_avg_pool2d(x, 1), 1))


def cifar_resnet(depth, num_classes=10, block=CifarBasicBlock, **block_options):
    """:class:`CifarResNet` of ``depth`` layers: ``6n + 2`` (``9n + 2`` with :class:`PreActBottleneck`)."""
    n = (depth - 2) // (9 if block.expansion == 4 else 6)
    return CifarResNet([n, n, n], num_classes, block, **block_options)


class _DenseLayer(tnn.Module):
    def __init__(self, num_input_features, growth_rate, bn_size):
        super().__init__()
        self.norm1 = tnn.BatchNorm2d(num_input_features)
        self.relu1 = tnn.ReLU(inplace=True)
        self.conv1 = tnn.Conv2d(num_input_features, bn_size * growth_rate, 1, 1, bias=False)
        self.norm2 = tnn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False)

    def forward(self, inputs):
        x = torch.cat(inputs, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _DenseBlock(tnn.ModuleDict):
    def __init__(self, num_layers, num_input_features, bn_size, growth_rate):
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(tnn.Sequential):
    def __init__(self, num_input_features, num_output_features):
        super().__init__()
        self.norm = tnn.BatchNorm2d(num_input_features)
        self.relu = tnn.ReLU(inplace=True)
        self.conv = tnn.Conv2d(num_input_features, num_output_features, 1, 1, bias=False)
        self.pool = tnn.AvgPool2d(2, 2)


class TVDenseNet(tnn.Module):
    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4,
                 num_classes=1000, stem="imagenet"):
        super().__init__()
        if stem == "imagenet":
            self.features = tnn.Sequential(OrderedDict([
                ("conv0", tnn.Conv2d(3, num_init_features, 7, 2, 3, bias=False)),
                ("norm0", tnn.BatchNorm2d(num_init_features)), ("relu0", tnn.ReLU(inplace=True)),
                ("pool0", tnn.MaxPool2d(3, 2, 1))]))
        else:
            stem_conv = tnn.Conv2d(3, num_init_features, 3, 1, 1, bias=False)
            self.features = tnn.Sequential(OrderedDict([("conv0", stem_conv)]))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(num_layers, num_features, bn_size, growth_rate))
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(num_features, num_features // 2))
                num_features //= 2
        self.features.add_module("norm5", tnn.BatchNorm2d(num_features))
        self.classifier = tnn.Linear(num_features, num_classes)

    def forward(self, x):
        out = TF.relu(self.features(x))
        return self.classifier(torch.flatten(TF.adaptive_avg_pool2d(out, 1), 1))
