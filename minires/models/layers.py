"""Building pieces shared by the residual blocks: convolutions, shortcuts, squeeze-excitation.

Shortcut options (He et al. 2015, section 4.1):

- ``'A'``: parameter-free. Spatial subsampling ``x[:, :, ::s, ::s]`` then zero-padding of the
  new channels, split evenly before and after the old ones (as in the widely used CIFAR
  reference implementation). Used wherever the shape changes; identity elsewhere.
- ``'B'``: a projection ``1x1 conv (stride s) + BN`` where the shape changes, identity
  elsewhere. This is torchvision's ``downsample`` (keys ``downsample.0.weight``,
  ``downsample.1.running_mean``, ...).
- ``'C'``: the projection in every block, even where the shape is unchanged.
"""

from __future__ import annotations

import minires.functional as F
from minires import nn
from minires.autograd import Tensor

SHORTCUT_OPTIONS = ("A", "B", "C")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (its BN supplies the shift)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def check_shortcut(shortcut: str) -> str:
    """Validate a shortcut option and return it upper-cased.

    Raises:
        ValueError: ``shortcut`` is not one of ``'A'``, ``'B'``, ``'C'``.
    """
    if not isinstance(shortcut, str) or shortcut.upper() not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut must be one of 'A', 'B', 'C', got {shortcut!r}")
    return shortcut.upper()


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad channels ``in_planes -> out_planes``.

    ``y = pad_C(x[:, :, ::stride, ::stride])`` with ``(out - in) // 2`` zero channels before
    and the rest after. Parameter-free, so it adds no state-dict keys.

    Args:
        in_planes: input channels ``C``.
        out_planes: output channels (``>= in_planes``).
        stride: spatial subsampling factor.

    Shape:
        ``(N, C, H, W) -> (N, out_planes, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"shortcut 'A' can only add channels (zero padding), got {in_planes} -> {out_planes}; "
                             "use shortcut='B' to reduce channels")
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_planes - self.in_planes
        if extra:
            x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_planes}, {self.out_planes}, stride={self.stride}"


def make_shortcut(option: str, in_planes: int, out_planes: int, stride: int,
                  with_bn: bool = True) -> nn.Module | None:
    """The shortcut module for one block, or ``None`` for the plain identity.

    Args:
        option: ``'A'``, ``'B'`` or ``'C'`` (see the module docstring).
        in_planes: channels entering the block.
        out_planes: channels leaving the block.
        stride: the block's stride.
        with_bn: follow the projection by BN (original blocks); pre-activation blocks use a
            bare convolution so that the skip path stays free of normalisation.

    Returns:
        ``ShortcutA``, ``Sequential(conv1x1, BatchNorm2d)`` (torchvision's ``downsample``),
        ``Sequential(conv1x1)``, or ``None`` where the identity fits.
    """
    option = check_shortcut(option)
    changes_shape = stride != 1 or in_planes != out_planes
    if option == "A":
        return ShortcutA(in_planes, out_planes, stride) if changes_shape else None
    if option == "B" and not changes_shape:
        return None
    if not with_bn:
        return nn.Sequential(conv1x1(in_planes, out_planes, stride))
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class SEModule(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from globally pooled features.

    ``s = sigmoid(fc2(relu(fc1(avgpool(x)))))``, ``y = x * s`` with ``fc1: C -> C // r`` and
    ``fc2: C // r -> C`` as 1x1 convolutions with bias (timm's ``se.fc1`` / ``se.fc2`` keys).

    Args:
        channels: ``C``.
        reduction: ``r`` (16 in the paper); the hidden width is ``max(1, C // r)``.

    Shape:
        ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"SE reduction must be a positive int, got {reduction!r}")
        hidden = max(1, channels // reduction)
        self.channels, self.reduction = channels, reduction
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.gate(self.fc2(self.relu(self.fc1(s))))
        return x * s

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
