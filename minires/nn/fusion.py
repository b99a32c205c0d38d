"""Layer fusion inside blocks: ``BatchNorm2d -> ReLU`` and ``BatchNorm2d -> + shortcut -> ReLU`` as one op.

Blocks and stems call :func:`conv_bn_relu` (with the shortcut as its ``addend`` at a
post-activation block's tail) and :func:`bn_relu` (pre-activation blocks, DenseNet
layers) where their layers meet in that order. When both modules are the library's own, unmodified
``BatchNorm2d`` and ``ReLU`` with no hooks registered, the pair runs as one fused op
(:func:`minires.functional.batch_norm_relu` / :func:`~minires.functional.batch_norm_add_relu`):
one pass over memory less per ReLU in each direction, the pre-activation never stored.
Otherwise (a hook on either module, a replaced or subclassed module, or fusion turned
off) the modules are called one after the other, exactly as written. Values and
gradients are the same either way (tested); only the autograd graph differs (one node
instead of two or three), so code that inspects nodes of the graph can turn fusion off.

For inference (batch norm in evaluation mode, no gradient wanted: under
``minires.no_grad()`` or with nothing requiring grad) :func:`conv_bn_relu` goes one step
further on NumPy: the batch norm, the addition and the ReLU become the epilogue of the
convolution, applied to each chunk of its output while it is in cache
(:func:`minires.ops.norm.conv_batch_norm_eval`); values agree with the unfused ops to
float rounding.

Turn it off for the whole process with :func:`set_fusion`, ``minires.config.set(fusion=False)``
or ``MINIRES_FUSION=0``, or for a block with ``minires.config.using(fusion=False)``.
"""

from __future__ import annotations

from .. import config
from ..autograd import Tensor, builds_graph
from ..ops.norm import conv_batch_norm_eval
from .activation import ReLU
from .batchnorm import BatchNorm2d
from .conv import Conv2d

def set_fusion(enabled: bool) -> None:
    """Turn block-level layer fusion on (the default) or off for the whole process (``minires.config`` ``fusion``)."""
    config.set(fusion=bool(enabled))


def fusion_enabled() -> bool:
    """Whether :func:`bn_relu` / :func:`conv_bn_relu` may fuse."""
    return config.get("fusion")


def _untouched(module, cls) -> bool:
    """``module`` is exactly ``cls``, without hooks or an instance-level ``forward``."""
    return (type(module) is cls and "forward" not in module.__dict__
            and not (module._forward_pre_hooks or module._forward_hooks
                     or module._backward_hooks or module._backward_pre_hooks))


def fusable(bn, relu) -> bool:
    """True when ``relu(bn(x))`` may run as one fused op (see the module docstring)."""
    return config.get("fusion") and _untouched(bn, BatchNorm2d) and _untouched(relu, ReLU)


def bn_relu(bn, relu, x):
    """``relu(bn(x))``, fused when :func:`fusable`."""
    if fusable(bn, relu):
        return bn.forward_fused(x)
    return relu(bn(x))


def _inference_epilogue(conv, bn, x, addend):
    """``relu(bn(conv(x)) [+ addend])`` as the convolution's epilogue (for an eval-mode ``bn``
    fusable with its ReLU, no gradient wanted), or ``None`` where that does not apply."""
    if (not bn.track_running_stats or not _untouched(conv, Conv2d) or conv.groups != 1
            or conv.out_channels != bn.num_features or not isinstance(x, Tensor)
            or not (addend is None or isinstance(addend, Tensor))
            or builds_graph((x, addend, conv.weight, conv.bias, bn.weight, bn.bias))):
        return None  # (anything unusual falls through to the module calls, which raise their own errors)
    return conv_batch_norm_eval(x, conv.weight, conv.bias, conv.stride, conv._numeric_padding,
                                bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps, addend)


def conv_bn_relu(conv, bn, relu, x, addend=None):
    """``relu(bn(conv(x)) [+ addend])``: one pass for inference where it applies, else
    ``conv`` and the fused batch norm + ReLU when :func:`fusable`, else the three (four)
    module calls."""
    if not fusable(bn, relu):
        y = bn(conv(x))
        return relu(y if addend is None else y + addend)
    out = None if bn.training else _inference_epilogue(conv, bn, x, addend)
    return bn.forward_fused(conv(x), addend) if out is None else out


__all__ = ["set_fusion", "fusion_enabled", "fusable", "bn_relu", "conv_bn_relu"]
