"""The autograd core: ``Tensor``, ``Function``, graph traversal, grad mode, ``gradcheck``.

``grad(outputs, inputs, grad_outputs=None, retain_graph=None, allow_unused=False)``
returns gradients without touching ``.grad`` (``torch.autograd.grad``);
``record_ops()`` records the calling thread's ``Function.apply`` calls.
"""

from .engine import grad
from .function import Function, record_ops
from .gradcheck import GradcheckError, gradcheck, numerical_vjp
from .grad_mode import builds_graph, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import (Tensor, from_numpy, ones, ones_like, rand, randn, tensor, zeros,
                     zeros_like)

__all__ = [
    "Function", "Tensor", "tensor", "zeros", "ones", "randn", "rand", "zeros_like", "ones_like",
    "from_numpy", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "gradcheck",
    "GradcheckError", "numerical_vjp", "grad", "record_ops", "builds_graph",
]
