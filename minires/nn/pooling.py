"""Pooling layers: ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``."""

from __future__ import annotations

from .. import functional as F
from ..autograd import Tensor
from .module import Module


def _check_unsupported(layer: str, **options) -> None:
    for name, (value, supported) in options.items():
        if value != supported:
            raise ValueError(f"{layer}: only {name}={supported!r} is supported, got {value!r}")


def _check_4d(layer: str, x) -> None:
    if isinstance(x, Tensor) and x.ndim != 4:
        raise ValueError(f"{layer}: expected a 4-D (N, C, H, W) input, got shape {x.shape}")


class MaxPool2d(Module):
    """Maximum over ``kernel_size`` windows of an ``(N, C, H, W)`` input (``torch.nn.MaxPool2d``).

    ``OH = (H + 2 PH - KH) // SH + 1``; padded positions never win (they count as -inf).

    Args:
        kernel_size: int or (KH, KW).
        stride: int or (SH, SW); defaults to ``kernel_size``.
        padding: int or (PH, PW), at most half the kernel.
        dilation: only 1 is supported.
        return_indices: only False is supported.
        ceil_mode: only False is supported.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        _check_unsupported("MaxPool2d", dilation=(dilation, 1), return_indices=(return_indices, False),
                           ceil_mode=(ceil_mode, False))
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, C, OH, OW)``."""
        _check_4d("MaxPool2d", x)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over ``kernel_size`` windows of an ``(N, C, H, W)`` input (``torch.nn.AvgPool2d``).

    Padded zeros count in the mean (PyTorch's default ``count_include_pad=True``).

    Args:
        kernel_size: int or (KH, KW).
        stride: int or (SH, SW); defaults to ``kernel_size``.
        padding: int or (PH, PW).
        ceil_mode: only False is supported.
        count_include_pad: only True is supported.
        divisor_override: only None is supported.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None):
        super().__init__()
        _check_unsupported("AvgPool2d", ceil_mode=(ceil_mode, False), count_include_pad=(count_include_pad, True),
                           divisor_override=(divisor_override, None))
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, C, OH, OW)``."""
        _check_4d("AvgPool2d", x)
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average-pool to a fixed ``output_size`` whatever the input size (``torch.nn.AdaptiveAvgPool2d``).

    ``AdaptiveAvgPool2d(1)`` is global average pooling: ``(N, C, H, W) -> (N, C, 1, 1)``.

    Args:
        output_size: int or (OH, OW).
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, C, OH, OW)``."""
        _check_4d("AdaptiveAvgPool2d", x)
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
