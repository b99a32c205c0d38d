"""Residual blocks: original (post-activation), pre-activation and plain, basic and bottleneck.

Every block shares one constructor signature, so a ResNet takes the block class as a
parameter::

    Block(in_planes, planes, stride=1, shortcut='B', groups=1, base_width=64,
          shortcut_scale=1.0, se_reduction=None, skip=True)

and one anatomy, which the gradient-flow tools rely on. For an input ``x``:

- ``block.residual_branch(x)`` computes ``F(x)``, the stacked layers (including the SE gate);
- ``block.shortcut(x)`` computes ``S(x)``, the skip path: ``shortcut_scale * x`` (identity),
  ``shortcut_scale * downsample(x)`` (option A, B or C), or ``None`` for a plain block;
- ``block.post_activation`` is the module applied after the addition: ``nn.ReLU()`` for the
  original blocks, ``nn.Identity()`` for pre-activation blocks;
- ``block.forward(x) == block.post_activation(F(x) + S(x))`` (``post_activation(F(x))``
  when ``block.skip`` is False).

Each block's ``forward`` is its figure, written with the fused ops of :mod:`minires.nn.fusion`
called by name: ``conv_bn_relu`` / ``bn_relu`` where a BN feeds a ReLU, and ``tail`` where
the last convolution and BN, the addition and ``post_activation`` meet (``join`` where no
BN ends the branch). They run as one fused op when the modules are untouched: same values
and gradients, fewer passes over memory. A hook on any of those modules, a replaced or
subclassed module, or ``minires.nn.set_fusion(False)`` restores the module-by-module calls.

Calling ``residual_branch`` and ``shortcut`` separately runs BN layers again; in training
mode that updates running statistics a second time, so analyse blocks in ``eval()`` mode
(or snapshot the buffers). In pre-activation blocks a projection shortcut reads the shared
pre-activation ``relu(bn1(x))`` (as in He et al. 2016); ``shortcut(x)`` recomputes it.
"""

from __future__ import annotations

from minires import nn
from minires.autograd import Tensor
from minires.nn.fusion import bn_relu, conv_bn_relu

from .layers import SEModule, check_shortcut, conv1x1, conv3x3, make_shortcut


class ResidualBlock(nn.Module):
    """Base class holding the shared anatomy; see the module docstring.

    Args:
        in_planes: channels of the block's input.
        planes: the block's base width; it outputs ``planes * expansion`` channels.
        stride: stride of the block's spatial downsampling (on the 3x3 convolution).
        shortcut: ``'A'`` (subsample + zero-pad), ``'B'`` (projection where the shape
            changes) or ``'C'`` (projection everywhere).
        groups: grouped-convolution cardinality of the 3x3 convolution (bottlenecks).
        base_width: width per group (bottlenecks; ``64`` is the plain ResNet).
        shortcut_scale: constant ``lambda`` multiplying the skip path (He et al. 2016, 3.1).
        se_reduction: add a squeeze-excitation gate with this reduction to the branch output.
        skip: ``False`` builds the plain block (same layers, no shortcut at all).

    Attributes:
        out_planes: channels of the output, ``planes * expansion``.
        downsample: the shortcut module (``ShortcutA`` or the projection), or ``None``.
        post_activation: the module applied after the addition.
        skip, shortcut_option, shortcut_scale, stride: the configuration.
    """

    expansion = 1
    preactivation = False

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", groups: int = 1,
                 base_width: int = 64, shortcut_scale: float = 1.0, se_reduction: int | None = None,
                 skip: bool = True):
        super().__init__()
        for name, value in (("in_planes", in_planes), ("planes", planes), ("stride", stride), ("groups", groups),
                            ("base_width", base_width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {value!r}")
        self.in_planes, self.planes, self.stride = in_planes, planes, stride
        self.out_planes = planes * self.expansion
        self.shortcut_option = check_shortcut(shortcut)
        self.shortcut_scale = float(shortcut_scale)
        self.skip = bool(skip)
        self.relu = nn.ReLU()
        self.post_activation = nn.Identity() if self.preactivation else nn.ReLU()

    def _finish(self, se_reduction) -> None:
        # created after the layers so state-dict keys follow torchvision/timm order (..., se, downsample)
        self.se = SEModule(self.out_planes, se_reduction) if se_reduction is not None else None
        self.downsample = None
        if self.skip:
            self.downsample = make_shortcut(self.shortcut_option, self.in_planes, self.out_planes, self.stride,
                                            with_bn=not self.preactivation)

    def residual_branch(self, x: Tensor) -> Tensor:
        """``F(x)``: the block's stacked layers (implemented by each block type)."""
        raise NotImplementedError

    def shortcut(self, x: Tensor) -> Tensor | None:
        """``S(x)``: ``shortcut_scale`` times the identity or ``downsample(x)``; ``None`` for plain blocks."""
        if not self.skip:
            return None
        s = x if self.downsample is None else self.downsample(x)
        return s * self.shortcut_scale if self.shortcut_scale != 1.0 else s

    def forward(self, x: Tensor) -> Tensor:
        """``post_activation(F(x) + S(x))``; the block types below write out their own figure."""
        out, shortcut = self.residual_branch(x), self.shortcut(x)
        return self.post_activation(out if shortcut is None else out + shortcut)

    def gate(self, out: Tensor) -> Tensor:
        """The squeeze-excitation gate on the branch output, where the block has one."""
        return out if self.se is None else self.se(out)

    def join(self, out: Tensor, shortcut: Tensor | None) -> Tensor:
        """``post_activation(se(out) + shortcut)``: the branch output meets the shortcut
        (``shortcut=None``, a plain block, adds nothing)."""
        out = self.gate(out)
        return self.post_activation(out if shortcut is None else out + shortcut)

    def tail(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, out: Tensor, shortcut: Tensor | None) -> Tensor:
        """``join(bn(conv(out)), shortcut)``: the last layers of a post-activation block, the
        addition and the activation, as one fused op where it applies (:func:`conv_bn_relu`
        with the shortcut as addend; not across an SE gate)."""
        if self.se is None:
            return conv_bn_relu(conv, bn, self.post_activation, out, addend=shortcut)
        return self.join(bn(conv(out)), shortcut)

    def zero_init_residual_(self) -> None:
        """Zero the last scale of ``F`` so the block starts as (scaled) identity (Goyal et al. 2017)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        parts = [f"{self.in_planes} -> {self.out_planes}", f"stride={self.stride}"]
        parts.append(f"shortcut={self.shortcut_option}" if self.skip else "skip=False")
        if self.shortcut_scale != 1.0:
            parts.append(f"shortcut_scale={self.shortcut_scale}")
        return ", ".join(parts)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions: ``F(x) = bn2(conv2(relu(bn1(conv1(x)))))``, ``y = relu(F(x) + S(x))``.

    torchvision keys: ``conv1, bn1, conv2, bn2`` (+ ``downsample.0/1`` for projections,
    ``se.fc1/fc2`` with SE). Arguments and the ``residual_branch`` / ``shortcut`` /
    ``post_activation`` anatomy as in :class:`ResidualBlock`.

    Shape:
        ``(N, in_planes, H, W) -> (N, planes, H / stride, W / stride)``.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", groups: int = 1,
                 base_width: int = 64, shortcut_scale: float = 1.0, se_reduction: int | None = None,
                 skip: bool = True):
        super().__init__(in_planes, planes, stride, shortcut, groups, base_width, shortcut_scale, se_reduction, skip)
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock only supports groups=1 and base_width=64, got {groups} and {base_width}")
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._finish(se_reduction)

    def forward(self, x: Tensor) -> Tensor:
        out = conv_bn_relu(self.conv1, self.bn1, self.relu, x)
        return self.tail(self.conv2, self.bn2, out, shortcut=self.shortcut(x))

    def residual_branch(self, x: Tensor) -> Tensor:
        """``F(x) = bn2(conv2(relu(bn1(conv1(x)))))``, then the SE gate if present."""
        out = conv_bn_relu(self.conv1, self.bn1, self.relu, x)
        return self.gate(self.bn2(self.conv2(out)))

    def zero_init_residual_(self) -> None:
        """Set ``bn2.weight`` to zero."""
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (stride here, as torchvision), 1x1 expand by 4: ``y = relu(F(x) + S(x))``.

    ``F(x) = bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))))`` with inner width
    ``int(planes * base_width / 64) * groups``: ResNet (64, 1), Wide ResNet (128, 1),
    ResNeXt (e.g. 4, 32). Keys ``conv1..3, bn1..3`` (+ ``downsample.0/1``, ``se.fc1/fc2``).

    Shape:
        ``(N, in_planes, H, W) -> (N, 4 * planes, H / stride, W / stride)``.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", groups: int = 1,
                 base_width: int = 64, shortcut_scale: float = 1.0, se_reduction: int | None = None,
                 skip: bool = True):
        super().__init__(in_planes, planes, stride, shortcut, groups, base_width, shortcut_scale, se_reduction, skip)
        width = int(planes * (base_width / 64.0)) * groups
        self.width = width
        self.conv1 = conv1x1(in_planes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, self.out_planes)
        self.bn3 = nn.BatchNorm2d(self.out_planes)
        self._finish(se_reduction)

    def forward(self, x: Tensor) -> Tensor:
        out = conv_bn_relu(self.conv1, self.bn1, self.relu, x)
        out = conv_bn_relu(self.conv2, self.bn2, self.relu, out)
        return self.tail(self.conv3, self.bn3, out, shortcut=self.shortcut(x))

    def residual_branch(self, x: Tensor) -> Tensor:
        """``F(x) = bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))))``, then the SE gate if present."""
        out = conv_bn_relu(self.conv1, self.bn1, self.relu, x)
        out = conv_bn_relu(self.conv2, self.bn2, self.relu, out)
        return self.gate(self.bn3(self.conv3(out)))

    def zero_init_residual_(self) -> None:
        """Set ``bn3.weight`` to zero."""
        nn.init.zeros_(self.bn3.weight)


class _PreActivation(ResidualBlock):
    """Pre-activation blocks: ``a = relu(bn1(x))`` feeds ``F`` and a projection shortcut."""

    preactivation = True

    def preact_shortcut(self, x: Tensor, a: Tensor | None) -> Tensor | None:
        """``S(x)`` given the pre-activation ``a = relu(bn1(x))`` (needed by projections only)."""
        if not self.skip:
            return None
        if self.downsample is None:
            s = x
        elif self.shortcut_option == "A":
            s = self.downsample(x)  # option A touches only the raw identity
        else:
            s = self.downsample(a)  # projections read the shared pre-activation
        return s * self.shortcut_scale if self.shortcut_scale != 1.0 else s

    def shortcut(self, x: Tensor) -> Tensor | None:
        """``S(x)``: scaled identity / option A of ``x``, or the projection of ``relu(bn1(x))``; ``None`` if plain."""
        projects = self.skip and self.downsample is not None and self.shortcut_option != "A"
        return self.preact_shortcut(x, bn_relu(self.bn1, self.relu, x) if projects else None)


class PreActBasicBlock(_PreActivation):
    """Pre-activation basic block (He et al. 2016): ``y = x + conv2(relu(bn2(conv1(relu(bn1(x))))))``.

    The identity path carries no BN or ReLU (``post_activation`` is ``nn.Identity()``);
    projections are a bare 1x1 convolution (``downsample.0``) on the pre-activation.
    The network adds a final BN-ReLU before pooling.

    Shape:
        ``(N, in_planes, H, W) -> (N, planes, H / stride, W / stride)``.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", groups: int = 1,
                 base_width: int = 64, shortcut_scale: float = 1.0, se_reduction: int | None = None,
                 skip: bool = True):
        super().__init__(in_planes, planes, stride, shortcut, groups, base_width, shortcut_scale, se_reduction, skip)
        if groups != 1 or base_width != 64:
            raise ValueError(f"PreActBasicBlock only supports groups=1 and base_width=64, "
                             f"got {groups} and {base_width}")
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self._finish(se_reduction)

    def forward(self, x: Tensor) -> Tensor:
        a = bn_relu(self.bn1, self.relu, x)
        out = self.conv2(conv_bn_relu(self.conv1, self.bn2, self.relu, a))
        return self.join(out, self.preact_shortcut(x, a))

    def residual_branch(self, x: Tensor) -> Tensor:
        """``F(x) = conv2(relu(bn2(conv1(relu(bn1(x))))))``, then the SE gate if present."""
        a = bn_relu(self.bn1, self.relu, x)
        return self.gate(self.conv2(conv_bn_relu(self.conv1, self.bn2, self.relu, a)))

    def zero_init_residual_(self) -> None:
        """Set ``conv2.weight`` to zero (the branch ends in a convolution)."""
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(_PreActivation):
    """Pre-activation bottleneck: BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 (x4).

    ``y = S(x) + conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x)))))))))``; identity path clean.

    Shape:
        ``(N, in_planes, H, W) -> (N, 4 * planes, H / stride, W / stride)``.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", groups: int = 1,
                 base_width: int = 64, shortcut_scale: float = 1.0, se_reduction: int | None = None,
                 skip: bool = True):
        super().__init__(in_planes, planes, stride, shortcut, groups, base_width, shortcut_scale, se_reduction, skip)
        width = int(planes * (base_width / 64.0)) * groups
        self.width = width
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, self.out_planes)
        self._finish(se_reduction)

    def forward(self, x: Tensor) -> Tensor:
        a = bn_relu(self.bn1, self.relu, x)
        out = conv_bn_relu(self.conv1, self.bn2, self.relu, a)
        out = self.conv3(conv_bn_relu(self.conv2, self.bn3, self.relu, out))
        return self.join(out, self.preact_shortcut(x, a))

    def residual_branch(self, x: Tensor) -> Tensor:
        """``F(x) = conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x)))))))))``, then the SE gate if present."""
        a = bn_relu(self.bn1, self.relu, x)
        out = conv_bn_relu(self.conv1, self.bn2, self.relu, a)
        return self.gate(self.conv3(conv_bn_relu(self.conv2, self.bn3, self.relu, out)))

    def zero_init_residual_(self) -> None:
        """Set ``conv3.weight`` to zero."""
        nn.init.zeros_(self.conv3.weight)


def _plain(block):
    """A subclass of ``block`` whose default is ``skip=False`` (no shortcut at all)."""

    class Plain(block):
        __doc__ = (f"{block.__name__} without its shortcut: ``y = post_activation(F(x))``; same layers and "
                   "state-dict keys, no ``downsample``. ``shortcut(x)`` returns ``None``.")

        def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", groups: int = 1,
                     base_width: int = 64, shortcut_scale: float = 1.0, se_reduction: int | None = None,
                     skip: bool = False):
            super().__init__(in_planes, planes, stride, shortcut, groups, base_width, shortcut_scale,
                             se_reduction, skip)

    Plain.__name__ = Plain.__qualname__ = f"Plain{block.__name__}"
    return Plain


PlainBasicBlock = _plain(BasicBlock)
PlainBottleneck = _plain(Bottleneck)

BLOCKS = {cls.__name__: cls for cls in (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck,
                                        PlainBasicBlock, PlainBottleneck)}
