"""Tiny hand-built blocks and nets for the analysis tests (float64, a few channels)."""

import numpy as np

import minires as mr
import minires.functional as F
import minires.nn as nn


class TinyBlock(nn.Module):
    """conv-BN-ReLU-conv-BN with a chosen shortcut: 'identity', 'scaled', 'A', 'B' or None (plain)."""

    def __init__(self, cin, cout, stride=1, shortcut="identity", preact=False, scale=0.7):
        super().__init__()
        self.preact = preact
        self.kind = shortcut
        self.scale = scale
        self.stride = stride
        self.cin, self.cout = cin, cout
        self.bn0 = nn.BatchNorm2d(cin) if preact else None
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout) if not preact else None
        if shortcut == "B":
            self.proj = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.proj_bn = nn.BatchNorm2d(cout)
        self.post_activation = None if preact else F.relu
        self.is_plain = shortcut is None

    def residual_branch(self, x):
        out = F.relu(self.bn0(x)) if self.preact else x
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.conv2(out)
        return out if self.preact else self.bn2(out)

    def shortcut_path(self, x):
        if self.kind == "identity":
            return x
        if self.kind == "scaled":
            return x * self.scale
        if self.kind == "A":
            sub = x[:, :, ::self.stride, ::self.stride]
            extra = self.cout - self.cin
            return F.pad(sub, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        if self.kind == "B":
            return self.proj_bn(self.proj(x))
        raise ValueError(self.kind)

    def forward(self, x):
        pre = self.residual_branch(x)
        if not self.is_plain:
            pre = pre + self.shortcut_path(x)
        return pre if self.post_activation is None else self.post_activation(pre)


class TinyNet(nn.Module):
    """stem conv + blocks + global pool + linear; ``blocks`` is a list of (cin, cout, stride, shortcut)."""

    def __init__(self, specs, preact=False, classes=3, cin=2):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, specs[0][0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(specs[0][0])
        self.layers = nn.Sequential(*[TinyBlock(a, b, s, k, preact) for a, b, s, k in specs])
        self.preact = preact
        self.fc = nn.Linear(specs[-1][1], classes)

    def forward(self, x):
        out = self.conv1(x)
        if not self.preact:
            out = F.relu(self.bn1(out))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def tiny_net(specs, preact=False, seed=0):
    mr.manual_seed(seed)
    return TinyNet(specs, preact=preact).double()


def batch(n=4, c=2, hw=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = mr.tensor(rng.standard_normal((n, c, hw, hw)), dtype=np.float64)
    y = mr.tensor(rng.integers(0, classes, n))
    return x, y
