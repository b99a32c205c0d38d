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


class _Pool2d(Module):
    """A pooling window's settings and the call of its functional form ``_pool``."""

    def __init__(self, kernel_size, stride, padding, **unsupported):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        for name, (value, _) in unsupported.items():
            setattr(self, name, value)
        _check_unsupported(type(self).__name__, **unsupported)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, C, OH, OW)``."""
        _check_4d(type(self).__name__, x)
        return self._pool(x, self.kernel_size, self.stride, self.padding)


class MaxPool2d(_Pool2d):
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

    _pool = staticmethod(F.max_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__(kernel_size, stride, padding, dilation=(dilation, 1),
                         return_indices=(return_indices, False), ceil_mode=(ceil_mode, False))

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(_Pool2d):
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

    _pool = staticmethod(F.avg_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode=(ceil_mode, False),
                         count_include_pad=(count_include_pad, True), divisor_override=(divisor_override, None))

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
