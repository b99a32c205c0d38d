"""PyTorch reference models for parity tests (torchvision is not installed, so they are written here).

Import only after ``pytest.importorskip("torch")``. The classes follow the public reference
implementations that minires promises compatibility with:

- ``TVBasicBlock`` / ``TVBottleneck`` / ``TVResNet``: torchvision's ``models/resnet.py``
  layout (stride on the 3x3 of the bottleneck, ``downsample = Sequential(conv1x1, BN)``),
  with an optional SE gate in timm's form (``se.fc1`` / ``se.fc2`` 1x1 convs with bias).
- ``CifarResNet``: the akamaster ``pytorch_resnet_cifar10`` network (option A is a lambda
  that subsamples and zero-pads planes // 4 channels on each side), option B projection,
  a skip-free plain variant and a ``shortcut_scale``.
- ``PreActBlock`` / ``PreActBottleneck`` / ``PreActResNet``: He et al. 2016 as in the
  fb.resnet.torch / kuangliu code: shared BN-ReLU feeds both the branch and a projection
  (a bare 1x1 conv), final BN-ReLU before pooling.
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


class LambdaLayer(tnn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class AkaBasicBlock(tnn.Module):
    """akamaster's BasicBlock, plus ``skip`` (plain nets) and ``scale`` (constant-scaled shortcut)."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1, option="A", skip=True, scale=1.0):
        super().__init__()
        self.conv1 = tnn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.skip, self.scale = skip, scale
        self.shortcut = tnn.Sequential()
        if skip and (stride != 1 or in_planes != planes):
            if option == "A":
                self.shortcut = LambdaLayer(lambda x: TF.pad(x[:, :, ::2, ::2],
                                                             (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0))
            else:
                self.shortcut = tnn.Sequential(tnn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                               tnn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(TF.relu(self.bn1(self.conv1(x)))))
        if self.skip:
            out = out + self.scale * self.shortcut(x)
        return TF.relu(out)


class CifarResNet(tnn.Module):
    """akamaster's ResNet (``linear`` renamed ``fc``; option-B projections named like torchvision)."""

    def __init__(self, num_blocks, num_classes=10, option="A", skip=True, scale=1.0):
        super().__init__()
        self.in_planes = 16
        self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], 1, option, skip, scale)
        self.layer2 = self._make_layer(32, num_blocks[1], 2, option, skip, scale)
        self.layer3 = self._make_layer(64, num_blocks[2], 2, option, skip, scale)
        self.fc = tnn.Linear(64, num_classes)

    def _make_layer(self, planes, n, stride, option, skip, scale):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(AkaBasicBlock(self.in_planes, planes, s, option, skip, scale))
            self.in_planes = planes
        return tnn.Sequential(*layers)

    def forward(self, x):
        out = TF.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = TF.avg_pool2d(out, out.size()[3])
        return self.fc(out.view(out.size(0), -1))

    def minires_state_dict(self):
        """The state dict under minires/torchvision names (akamaster calls projections ``shortcut``)."""
        return OrderedDict((k.replace(".shortcut.", ".downsample."), v) for k, v in self.state_dict().items())


class PreActBlock(tnn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = tnn.BatchNorm2d(in_planes)
        self.conv1 = tnn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.downsample = tnn.Sequential(tnn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = TF.relu(self.bn1(x))
        shortcut = self.downsample(out) if hasattr(self, "downsample") else x
        out = self.conv2(TF.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = tnn.BatchNorm2d(in_planes)
        self.conv1 = tnn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        if stride != 1 or in_planes != planes * 4:
            self.downsample = tnn.Sequential(tnn.Conv2d(in_planes, planes * 4, 1, stride, bias=False))

    def forward(self, x):
        out = TF.relu(self.bn1(x))
        shortcut = self.downsample(out) if hasattr(self, "downsample") else x
        out = self.conv2(TF.relu(self.bn2(self.conv1(out))))
        out = self.conv3(TF.relu(self.bn3(out)))
        return out + shortcut


class PreActResNet(tnn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
        for i, (planes, n) in enumerate(zip((16, 32, 64), num_blocks)):
            layers = []
            for s in [1 if i == 0 else 2] + [1] * (n - 1):
                layers.append(block(self.in_planes, planes, s))
                self.in_planes = planes * block.expansion
            setattr(self, f"layer{i + 1}", tnn.Sequential(*layers))
        self.final_bn = tnn.BatchNorm2d(self.in_planes)
        self.fc = tnn.Linear(self.in_planes, num_classes)

    def forward(self, x):
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = TF.relu(self.final_bn(out))
        return self.fc(torch.flatten(TF.adaptive_avg_pool2d(out, 1), 1))


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
