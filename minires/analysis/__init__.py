"""Gradient-flow analysis: the residual stream's skip and branch terms, Jacobian probes,
path-length sampling and gradient norms through depth.

Example:
    >>> import minires as mr
    >>> from minires import analysis, models
    >>> net = models.create("resnet20")
    >>> x, y = mr.randn(8, 3, 32, 32), mr.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    >>> for r in analysis.trace_residual_stream(net, x, y):
    ...     print(r.name, r.norms["skip"], r.norms["branch"], r.identity_error)
"""

from ._graph import OpTape, register_jvp_rule, register_linear_op, tangent_of, vjp
from .blocks import BlockParts, block_parts, find_blocks, register_block_adapter
from .gradnorms import conv_gradient_ratio, gradient_norms, gradient_profile
from .jacobian import (BlockJacobian, Linearization, block_jacobian_norms, jacobian_matrix, jvp,
                       spectral_norm)
from .paths import PathLengthResult, path_length_distribution
from .tracking import GradientTracker, TrackedStep, tracked_step
from .stream import BlockRecord, PreactTerm, TracedRun, preact_decomposition, trace_residual_stream

__all__ = [
    "trace_residual_stream", "preact_decomposition", "BlockRecord", "PreactTerm", "TracedRun",
    "jvp", "vjp", "Linearization", "jacobian_matrix", "spectral_norm", "block_jacobian_norms",
    "BlockJacobian", "path_length_distribution", "PathLengthResult", "gradient_norms",
    "conv_gradient_ratio", "gradient_profile", "BlockParts", "block_parts", "find_blocks", "register_block_adapter",
    "register_jvp_rule", "register_linear_op", "tangent_of", "OpTape", "GradientTracker", "TrackedStep",
    "tracked_step",
]
