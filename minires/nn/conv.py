"""``Conv2d``: a 2-D convolution layer owning its weight and bias."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..kernels.conv import int_pair
from . import init
from .module import Module
from .parameter import make_parameter


def _compact(pair: tuple[int, int]):
    """An int when both entries agree (what every functional accepts), else the pair."""
    return pair[0] if pair[0] == pair[1] else pair


class Conv2d(Module):
    """2-D convolution over an ``(N, C_in, H, W)`` input (``torch.nn.Conv2d``).

    ``out[n, o] = bias[o] + sum_{c in group(o)} weight[o, c] * x[n, c]`` (cross-correlation),
    output size ``OH = (H + 2 PH - KH) // SH + 1``.

    Weight ``(C_out, C_in / groups, KH, KW)`` is initialised with
    ``kaiming_uniform_(a=sqrt(5))`` (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and bias
    ``(C_out,)`` with U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as PyTorch does.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: int or (KH, KW).
        stride: int or (SH, SW).
        padding: int, (PH, PW), ``'valid'`` (0) or ``'same'`` (stride 1, odd kernels).
        dilation: only 1 is supported (kept for PyTorch's argument order).
        groups: number of channel groups; both channel counts must be divisible by it.
        bias: whether to learn an additive bias.
        padding_mode: only ``'zeros'`` is supported.
        device: where the parameters live (default device if None).
        dtype: parameter dtype (float32 if None).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"Conv2d: {name} must be a positive int, got {value!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value % groups:
                raise ValueError(f"Conv2d: {name} must be divisible by groups, got {value} and {groups}")
        self.kernel_size = int_pair(kernel_size, "Conv2d: kernel_size", minimum=1)
        self.stride = int_pair(stride, "Conv2d: stride", minimum=1)
        if int_pair(dilation, "Conv2d: dilation") != (1, 1):
            raise ValueError(f"Conv2d: only dilation=1 is supported, got {dilation!r}")
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: only padding_mode='zeros' is supported, got {padding_mode!r}")
        # a string is kept as given (and printed so), as PyTorch does
        self.padding = padding if isinstance(padding, str) else int_pair(padding, "Conv2d: padding", minimum=0)
        if self.padding == "same":
            if self.stride != (1, 1) or any(k % 2 == 0 for k in self.kernel_size):
                raise ValueError("Conv2d: padding='same' needs stride 1 and odd kernel sizes, got "
                                 f"stride={self.stride}, kernel_size={self.kernel_size}")
            self._numeric_padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
        elif isinstance(padding, str) and padding != "valid":
            raise ValueError(f"Conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        else:
            self._numeric_padding = (0, 0) if self.padding == "valid" else self.padding
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.dilation = (1, 1)
        self.padding_mode = padding_mode
        self.weight = make_parameter((self.out_channels, self.in_channels // self.groups) + self.kernel_size,
                                     dtype, device)
        self.register_parameter("bias", make_parameter((self.out_channels,), dtype, device) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation (see the class docstring)."""
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, C_out, OH, OW)``."""
        return F.conv2d(x, self.weight, self.bias, stride=_compact(self.stride),
                        padding=_compact(self._numeric_padding), groups=self.groups)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"  # 'same' / 'valid' print as given
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text
