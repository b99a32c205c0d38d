"""2-D convolution as a differentiable op (``F.conv2d``), on the kernels in :mod:`minires.kernels.conv`."""

from __future__ import annotations

from ..autograd import Function, Tensor
from ..autograd.function import check_float_tensor, sum_tangents
from ..kernels.conv import (conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight,
                            conv2d_forward, conv_geometry)
from .shape import pad


class Conv2d(Function):
    """Convolution of ``x (N, C, H, W)`` with ``w (C_out, C/groups, KH, KW)`` plus optional bias."""

    def forward(self, x, w, b, stride=1, padding=0, groups=1):
        self.options = dict(stride=stride, padding=padding, groups=groups)
        self.workspace = {}  # the algorithm records its name (and anything it keeps) here for backward
        self.x, self.w = x, w
        return conv2d_forward(x, w, b, stride, padding, groups, workspace=self.workspace)

    def backward(self, grad):
        need_x, need_w, need_b = self.needs_input_grad
        gx = gw = gb = None
        if need_x:
            # d out/d x: the transposed convolution, col2im(W^T @ dout)
            gx = conv2d_backward_input(grad, self.w, self.x.shape, workspace=self.workspace, **self.options)
        if need_w:
            # d out/d W: sum over batch of dout @ im2col(x)^T
            gw = conv2d_backward_weight(grad, self.x, self.w.shape, workspace=self.workspace, **self.options)
        if need_b:
            # d out/d b = 1 at every output position of channel o
            gb = conv2d_backward_bias(grad)
        return gx, gw, gb

    def jvp(self, tangents, inputs, output, **options):
        # conv(x, w) + b is bilinear in (x, w) plus b: d = conv(dx, w) + conv(x, dw) + db
        (tx, tw, tb), (x, w, _) = tangents, inputs
        return sum_tangents(output.shape, None if tx is None else Conv2d().forward(tx, w, None, **options),
                            None if tw is None else Conv2d().forward(x, tw, None, **options),
                            None if tb is None else tb.reshape(1, -1, 1, 1))


def _string_padding(x: Tensor, weight: Tensor, stride, padding: str):
    """Resolve ``'valid'`` / ``'same'`` to numeric padding (PyTorch's rules).

    ``'same'`` needs stride 1; it pads ``K - 1`` per axis, the odd one extra at the
    bottom/right (as PyTorch), by an explicit :func:`pad` of ``x`` when it is uneven.
    """
    if padding == "valid":
        return x, 0
    if padding != "same":
        raise ValueError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if stride not in (1, (1, 1), [1, 1]):
        raise ValueError(f"conv2d: padding='same' needs stride 1, got stride={stride!r}")
    if weight.ndim != 4 or x.ndim not in (3, 4):
        return x, 0  # let the shape checks below report the rank error
    KH, KW = weight.shape[2:]
    top, left = (KH - 1) // 2, (KW - 1) // 2
    bottom, right = KH - 1 - top, KW - 1 - left
    if (top, left) == (bottom, right):
        return x, (top, left)
    return pad(x, (left, right, top, bottom)), 0


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, groups=1) -> Tensor:
    """2-D cross-correlation with PyTorch's semantics and weight layout.

    ``out[n, o, p, q] = bias[o] + sum_{c, i, j} weight[o, c, i, j] *
    x_padded[n, g(o)*C/groups + c, p*SH + i, q*SW + j]``, computed as im2col + GEMM.

    Args:
        x: input ``(N, C, H, W)``, or ``(C, H, W)`` for one unbatched image.
        weight: ``(C_out, C/groups, KH, KW)``.
        bias: ``(C_out,)`` or ``None``.
        stride: int or ``(SH, SW)``, each >= 1.
        padding: int or ``(PH, PW)`` zeros added on each side, each >= 0; or ``'valid'``
            (no padding) or ``'same'`` (stride 1 only: output size = input size; for an
            even kernel the extra row/column of zeros goes bottom/right, as in PyTorch).
        groups: channel groups; ``C`` and ``C_out`` must be divisible by it
            (``groups=C`` is a depthwise convolution).

    Returns:
        ``(N, C_out, OH, OW)`` (``(C_out, OH, OW)`` for unbatched input) with
        ``OH = (H + 2*PH - KH) // SH + 1`` and ``OW = (W + 2*PW - KW) // SW + 1``.

    Raises:
        TypeError: non-tensor or non-floating inputs, mixed float dtypes, non-int options.
        ValueError: wrong ranks, channel/group or bias mismatch, non-positive stride,
            negative padding, a kernel larger than the padded input, mixed devices.
    """
    check_float_tensor("conv2d", x)
    check_float_tensor("conv2d", weight, "weight")
    check_float_tensor("conv2d", bias, "bias", allow_none=True)
    if isinstance(padding, str):
        x, padding = _string_padding(x, weight, stride, padding)
    if x.ndim == 3:  # unbatched (C, H, W), as PyTorch allows
        try:
            geometry = conv_geometry((1,) + x.shape, weight.shape, stride, padding, groups,
                                     None if bias is None else bias.shape)
        except ValueError as exc:
            raise ValueError(f"{exc} (unbatched input of shape {x.shape} read as a batch of one)") from None
        out = conv2d(x.reshape(1, *x.shape), weight, bias, stride, padding, groups)
        return out.reshape(*geometry.out_shape[1:])
    if x.ndim != 4:
        raise ValueError(f"conv2d: expected input of rank 4 (N, C, H, W) or 3 (C, H, W), got rank {x.ndim} "
                         f"with shape {x.shape}")
    # raises ValueError/TypeError with expected vs given before any work is done
    conv_geometry(x.shape, weight.shape, stride, padding, groups, None if bias is None else bias.shape)
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding, groups=groups)


__all__ = ["Conv2d", "conv2d"]
