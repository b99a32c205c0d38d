"""Activations: relu, sigmoid (PyTorch semantics, NaN included)."""

from __future__ import annotations

from ..autograd import Function, Tensor
from ..autograd.function import check_float_tensor
from ..kernels import activation as kernels


class ReLU(Function):
    def forward(self, x):
        out = kernels.relu_forward(x)
        self.out = out
        return out

    def backward(self, grad):
        # d relu(x)/dx = 0 where x <= 0 else 1 (0 at 0; NaN input passes the gradient, as PyTorch)
        return kernels.relu_backward(grad, self.out)

    def jvp(self, tangents, inputs, output):
        return tangents[0] * (output > 0)  # d relu(x) = 1[x > 0] dx


class Sigmoid(Function):
    def forward(self, x):
        self.out = kernels.sigmoid_forward(x)
        return self.out

    def backward(self, grad):
        # d sigmoid(x)/dx = s (1 - s)
        return kernels.sigmoid_backward(grad, self.out)

    def jvp(self, tangents, inputs, output):
        return tangents[0] * output * (1 - output)  # d s(x) = s (1 - s) dx


def relu(x: Tensor) -> Tensor:
    """Rectified linear unit, elementwise.

    ``relu(x) = max(x, 0)``; the gradient is 1 where ``x > 0`` and 0 where ``x <= 0``.
    NaN propagates as in PyTorch: ``relu(nan) = nan`` and the gradient at a NaN input passes
    through.

    Args:
        x: a floating tensor of any shape.

    Returns:
        A tensor shaped like ``x``.

    Raises:
        TypeError: ``x`` is not a floating-point Tensor.
    """
    check_float_tensor("relu", x, what=None)
    return ReLU.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    """Logistic sigmoid, elementwise.

    ``sigmoid(x) = 1 / (1 + exp(-x))``, computed without overflow; its derivative is
    ``sigmoid(x) * (1 - sigmoid(x))``. NaN propagates.

    Args:
        x: a floating tensor of any shape.

    Returns:
        A tensor shaped like ``x`` with values in ``[0, 1]``.

    Raises:
        TypeError: ``x`` is not a floating-point Tensor.
    """
    check_float_tensor("sigmoid", x, what=None)
    return Sigmoid.apply(x)


__all__ = ["relu", "sigmoid", "ReLU", "Sigmoid"]
