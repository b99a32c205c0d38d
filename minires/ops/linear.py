"""Fully connected layer as a differentiable op (``F.linear``): ``y = x W^T + b``."""

from __future__ import annotations

from ..autograd import Function, Tensor
from ..autograd.function import check_float_tensor, sum_tangents
from ..backend import get_array_module


class Linear(Function):
    """``y = x @ w.T + b`` for ``x (..., in)``, ``w (out, in)``, ``b (out,)``."""

    def forward(self, x, w, b):
        xp = get_array_module(x)
        self.x, self.w = x, w
        out = xp.matmul(x, w.T)
        if b is not None:
            out += b
        return out

    def backward(self, grad):
        need_x, need_w, need_b = self.needs_input_grad
        x, w = self.x, self.w
        out_features, in_features = w.shape
        grad_mat = grad.reshape(-1, out_features)  # leading dims flattened into rows
        gx = gw = gb = None
        if need_x:
            # dy/dx = W: dx = dy @ W
            gx = (grad_mat @ w).reshape(x.shape)
        if need_w:
            # dy/dW: dW = dy^T @ x, summed over every leading position
            gw = grad_mat.T @ x.reshape(-1, in_features)
        if need_b:
            # dy/db = 1: db = dy summed over every leading position
            gb = grad_mat.sum(axis=0)
        return gx, gw, gb

    def jvp(self, tangents, inputs, output):
        # x W^T + b is bilinear in (x, W) plus b: d = dx W^T + x dW^T + db
        (tx, tw, tb), (x, w, _) = tangents, inputs
        return sum_tangents(output.shape, None if tx is None else tx @ w.T, None if tw is None else x @ tw.T, tb)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Affine map ``y = x W^T + b`` over the last axis (PyTorch's ``F.linear``).

    Args:
        x: input ``(..., in_features)`` (at least 1-d).
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)`` or ``None``.

    Returns:
        ``(..., out_features)``.

    Raises:
        TypeError: non-tensor or non-floating inputs, mixed float dtypes.
        ValueError: wrong ranks, ``x.shape[-1] != in_features``, a bias of the wrong
            shape, mixed devices.
    """
    check_float_tensor("linear", x)
    check_float_tensor("linear", weight, "weight")
    check_float_tensor("linear", bias, "bias", allow_none=True)
    if weight.ndim != 2:
        raise ValueError(f"linear: expected weight of rank 2 (out_features, in_features), got rank "
                         f"{weight.ndim} with shape {weight.shape}")
    if x.ndim < 1:
        raise ValueError("linear: expected input of rank >= 1 (..., in_features), got a 0-d tensor")
    out_features, in_features = weight.shape
    if x.shape[-1] != in_features:
        raise ValueError(f"linear: weight {weight.shape} expects input (..., {in_features}), "
                         f"got input of shape {x.shape}")
    if bias is not None and bias.shape != (out_features,):
        raise ValueError(f"linear: expected bias of shape ({out_features},), got {bias.shape}")
    return Linear.apply(x, weight, bias)


__all__ = ["Linear", "linear"]
