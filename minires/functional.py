"""The stateless, differentiable functions (``import minires.functional as F``).

Signatures and semantics follow ``torch.nn.functional`` so results compare one to one.
Each function lives in its family module under :mod:`minires.ops`; this module gathers them.
"""

from .kernels.conv import (available_conv_algorithms, conv_algorithm, get_conv_algorithm,
                           set_conv_algorithm)
from .ops.activation import relu, sigmoid
from .ops.arith import (abs, add, div, exp, floor_divide, log, matmul, mul, neg, pow, remainder,  # noqa: A004
                        rpow, sqrt, sub)
from .ops.conv import conv2d
from .ops.linear import linear
from .ops.loss import cross_entropy, log_softmax, nll_loss, softmax
from .ops.norm import batch_norm, batch_norm_add_relu, batch_norm_relu
from .ops.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .ops.reduce import max, mean, sum  # noqa: A004
from .ops.shape import cat, flatten, getitem, pad, permute, reshape, stack, transpose

__all__ = [
    "relu", "sigmoid", "conv2d", "linear", "cross_entropy", "log_softmax", "softmax", "nll_loss",
    "batch_norm", "batch_norm_relu", "batch_norm_add_relu", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "cat", "flatten", "pad",
    "reshape", "transpose", "permute", "stack", "getitem", "sum", "mean", "max", "add", "sub",
    "mul", "div", "floor_divide", "remainder", "neg", "pow", "rpow", "matmul", "exp", "log", "sqrt", "abs",
    "set_conv_algorithm", "get_conv_algorithm", "conv_algorithm", "available_conv_algorithms",
]
