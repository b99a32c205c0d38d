"""minires: a from-scratch deep learning engine on NumPy (CPU) and CuPy (GPU).

Example:
    >>> import minires as mr
    >>> import minires.functional as F
    >>> x = mr.tensor([[1.0, -2.0]], requires_grad=True)
    >>> F.relu(x).sum().backward()
"""

import numpy as np

from . import backend
from .autograd import (Function, GradcheckError, Tensor, enable_grad, from_numpy, gradcheck,
                       is_grad_enabled, no_grad, ones, ones_like, rand, randn, set_grad_enabled,
                       tensor, zeros, zeros_like)
from .backend import cuda_available, default_device, manual_seed

__version__ = "0.1.0"

float32 = np.float32
float64 = np.float64
int64 = np.int64

from . import functional  # noqa: E402  (functional sits above autograd)

_SUBPACKAGES = ("nn", "optim", "models", "io", "data", "train", "analysis", "kernels", "ops")


def __getattr__(name):
    """Import the heavier subpackages (``minires.models``, ``minires.io``, ...) on first use."""
    if name in _SUBPACKAGES:
        import importlib  # noqa: PLC0415

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'minires' has no attribute {name!r}")


__all__ = [
    "Tensor", "Function", "tensor", "zeros", "ones", "randn", "rand", "zeros_like", "ones_like",
    "from_numpy", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "gradcheck",
    "GradcheckError", "manual_seed", "cuda_available", "default_device", "float32", "float64",
    "int64", "functional", "backend",
]
