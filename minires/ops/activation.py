"""Activations: relu, sigmoid."""

from __future__ import annotations

from ..autograd import Function, Tensor
from ..backend import get_array_module


class ReLU(Function):
    def forward(self, x):
        xp = get_array_module(x)
        out = xp.maximum(x, 0)
        self.mask = out > 0
        return out

    def backward(self, grad):
        # d relu(x)/dx = 1 where x > 0 else 0 (0 at 0, as PyTorch)
        return grad * self.mask


class Sigmoid(Function):
    def forward(self, x):
        xp = get_array_module(x)
        self.out = 0.5 * (xp.tanh(0.5 * x) + 1)  # overflow-free form
        return self.out

    def backward(self, grad):
        # d sigmoid(x)/dx = s (1 - s)
        return grad * self.out * (1 - self.out)


def relu(x: Tensor) -> Tensor:
    """Elementwise ``max(x, 0)``; NaN stays NaN as in PyTorch."""
    return ReLU.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    """Elementwise ``1 / (1 + exp(-x))``."""
    return Sigmoid.apply(x)
