"""``Linear``, ``Identity`` and ``Flatten``."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from . import init
from .module import Module
from .parameter import make_parameter


class Linear(Module):
    """Affine map ``y = x W^T + b`` over the last axis (``torch.nn.Linear``).

    Weight ``(out_features, in_features)`` is initialised with ``kaiming_uniform_(a=sqrt(5))``
    (U(-1/sqrt(in), 1/sqrt(in))), bias ``(out_features,)`` with U(-1/sqrt(in), 1/sqrt(in)).

    Args:
        in_features: size of each input's last axis.
        out_features: size of each output's last axis.
        bias: whether to learn an additive bias.
        device: where the parameters live (default device if None).
        dtype: parameter dtype (float32 if None).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"Linear: {name} must be a non-negative int, got {value!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = make_parameter((self.out_features, self.in_features), dtype, device)
        self.register_parameter("bias", make_parameter((self.out_features,), dtype, device) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation (see the class docstring)."""
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(*, in_features) -> (*, out_features)``."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    """Returns its input unchanged; accepts and ignores any constructor arguments."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        """``x -> x``."""
        return x


class Flatten(Module):
    """Merge axes ``start_dim..end_dim`` into one: ``(N, C, H, W) -> (N, C*H*W)`` by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Flatten ``x`` between ``start_dim`` and ``end_dim`` (inclusive)."""
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
