"""Activation layers: ``ReLU`` and ``Sigmoid``."""

from __future__ import annotations

from .. import functional as F
from ..autograd import Tensor
from .module import Module


class ReLU(Module):
    """Elementwise ``max(x, 0)``.

    Args:
        inplace: accepted for PyTorch compatibility and shown in the repr; the result
            is always a new tensor (autograd here has no in-place ops), so memory use
            is that of ``inplace=False``.
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x: Tensor) -> Tensor:
        """``relu(x)``, same shape."""
        return F.relu(x)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Sigmoid(Module):
    """Elementwise ``1 / (1 + exp(-x))``."""

    def forward(self, x: Tensor) -> Tensor:
        """``sigmoid(x)``, same shape."""
        return F.sigmoid(x)
