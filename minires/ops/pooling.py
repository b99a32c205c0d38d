"""2-D pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d (PyTorch semantics).

Inputs are ``(N, C, H, W)`` or unbatched ``(C, H, W)`` as in PyTorch.
"""

from __future__ import annotations

from ..autograd import Function, Tensor
from ..autograd.function import check_float_tensor
from ..kernels import pooling as kernels
from ..kernels.conv import int_pair


class MaxPool2d(Function):
    def forward(self, x, *, KH, KW, SH, SW, PH, PW):  # noqa: N803
        out, self.argmax = kernels.max_pool2d_forward(x, KH, KW, SH, SW, PH, PW)
        self.x_shape, self.window = x.shape, (KH, KW, SH, SW, PH, PW)
        return out

    def backward(self, grad):
        # d out[o]/d x[p] = 1 where p is the argmax of window o, else 0 (overlaps add up)
        return kernels.max_pool2d_backward(grad, self.argmax, self.x_shape, *self.window)


class AvgPool2d(Function):
    def forward(self, x, *, KH, KW, SH, SW, PH, PW):  # noqa: N803
        self.x_shape, self.window = x.shape, (KH, KW, SH, SW, PH, PW)
        return kernels.avg_pool2d_forward(x, KH, KW, SH, SW, PH, PW)

    def backward(self, grad):
        # d out[o]/d x[p] = 1/(KH KW) for every pixel p in window o (padding included in the count)
        return kernels.avg_pool2d_backward(grad, self.x_shape, *self.window)

    jvp = Function.linear_jvp


class AdaptiveAvgPool2d(Function):
    def forward(self, x, *, OH, OW):  # noqa: N803
        self.x_shape = x.shape
        return kernels.adaptive_avg_pool2d_forward(x, OH, OW)

    def backward(self, grad):
        # d out[i, j]/d x[h, w] = 1/(|bin_i| |bin_j|) where (h, w) lies in bin (i, j)
        return kernels.adaptive_avg_pool2d_backward(grad, self.x_shape)

    jvp = Function.linear_jvp


def _check_input(name: str, x) -> None:
    check_float_tensor(name, x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name}: expected a 3-d (C, H, W) or 4-d (N, C, H, W) input, got shape {x.shape}")
    if 0 in x.shape[-3:] or (x.ndim == 4 and x.shape[1] == 0):
        raise ValueError(f"{name}: expected non-empty channel and spatial sizes, got shape {x.shape}")


def _window(name: str, x: Tensor, kernel_size, stride, padding):
    """Validate a pooling window and return ``(KH, KW, SH, SW, PH, PW)``."""
    _check_input(name, x)
    KH, KW = int_pair(kernel_size, f"{name}: kernel_size", minimum=1, single_ok=True)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        SH, SW = KH, KW
    else:
        SH, SW = int_pair(stride, f"{name}: stride", minimum=1, single_ok=True)
    PH, PW = int_pair(padding, f"{name}: padding", minimum=0, single_ok=True)
    if 2 * PH > KH or 2 * PW > KW:
        raise ValueError(
            f"{name}: padding must be at most half of the kernel size, got padding=({PH}, {PW}) "
            f"for kernel_size=({KH}, {KW})")
    H, W = x.shape[-2:]
    OH = kernels.pool_output_size(H, KH, SH, PH)
    OW = kernels.pool_output_size(W, KW, SW, PW)
    if OH < 1 or OW < 1:
        raise ValueError(
            f"{name}: kernel ({KH}, {KW}) is larger than the padded input ({H + 2 * PH}, {W + 2 * PW}) "
            f"(input {x.shape}, padding ({PH}, {PW})); the output size would be ({OH}, {OW})")
    return dict(KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW)


def _apply_batched(op, x: Tensor, **options) -> Tensor:
    """Run a 4-d pooling op; a 3-d input is treated as a batch of one and returned 3-d."""
    if x.ndim == 4:
        return op.apply(x, **options)
    out = op.apply(x.reshape((1,) + x.shape), **options)
    return out.reshape(out.shape[1:])


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """2-D max pooling (PyTorch's ``F.max_pool2d`` with dilation 1, ``ceil_mode=False``).

    ``out[n, c, oh, ow] = max over the window at (oh*SH - PH, ow*SW - PW)`` of size
    ``KH x KW``; padding counts as ``-inf``. The gradient goes to the chosen element (the
    first maximum in window order; a NaN always wins, as in PyTorch); overlapping windows
    accumulate.

    Args:
        x: ``(N, C, H, W)`` or ``(C, H, W)`` floating tensor.
        kernel_size: ``KH`` and ``KW``, an int or a pair.
        stride: an int or a pair; ``None`` (default) means ``kernel_size``.
        padding: implicit ``-inf`` padding on each side, an int or a pair, at most half the kernel.

    Returns:
        ``(N, C, OH, OW)`` with ``OH = (H + 2 PH - KH) // SH + 1`` (3-d in, 3-d out).

    Raises:
        TypeError: non-Tensor or non-floating input; non-integer window arguments.
        ValueError: wrong rank, non-positive kernel or stride, negative padding, padding
            larger than half the kernel, or a kernel larger than the padded input.
    """
    return _apply_batched(MaxPool2d, x, **_window("max_pool2d", x, kernel_size, stride, padding))


def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """2-D average pooling (PyTorch's ``F.avg_pool2d`` defaults: ``count_include_pad=True``, ``ceil_mode=False``).

    ``out[n, c, oh, ow] = sum of the KH x KW window (zero padding included) / (KH KW)``.

    Args:
        x: ``(N, C, H, W)`` or ``(C, H, W)`` floating tensor.
        kernel_size: ``KH`` and ``KW``, an int or a pair.
        stride: an int or a pair; ``None`` (default) means ``kernel_size``.
        padding: implicit zero padding on each side, an int or a pair, at most half the kernel.

    Returns:
        ``(N, C, OH, OW)`` with ``OH = (H + 2 PH - KH) // SH + 1`` (3-d in, 3-d out).

    Raises:
        TypeError, ValueError: as :func:`max_pool2d`.
    """
    return _apply_batched(AvgPool2d, x, **_window("avg_pool2d", x, kernel_size, stride, padding))


def adaptive_avg_pool2d(x: Tensor, output_size) -> Tensor:
    """2-D adaptive average pooling (PyTorch's ``F.adaptive_avg_pool2d``).

    Output bin ``i`` along an axis of input length ``L`` and output length ``O`` averages
    the inputs ``floor(i L / O) <= l < ceil((i + 1) L / O)``; any output size works,
    including ones that do not divide the input or exceed it.

    Args:
        x: ``(N, C, H, W)`` or ``(C, H, W)`` floating tensor.
        output_size: ``OH`` and ``OW``, an int or a pair; ``None`` in a pair keeps that input size.

    Returns:
        ``(N, C, OH, OW)`` (3-d in, 3-d out).

    Raises:
        TypeError: non-Tensor or non-floating input, or a malformed ``output_size``.
        ValueError: wrong rank, empty input or a non-positive output size.
    """
    name = "adaptive_avg_pool2d"
    _check_input(name, x)
    H, W = x.shape[-2:]
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(size if size is not None else default
                            for size, default in zip(output_size, (H, W)))
    OH, OW = int_pair(output_size, f"{name}: output_size", minimum=1, single_ok=True)
    return _apply_batched(AdaptiveAvgPool2d, x, OH=OH, OW=OW)


__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]
