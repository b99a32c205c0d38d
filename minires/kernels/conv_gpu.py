"""GPU convolution: im2col + cuBLAS GEMM that keeps the forward's columns for the weight gradient.

CuPy 14 has no cuDNN bindings, so a convolution on the GPU is the reference im2col + GEMM
of :mod:`minires.kernels.conv` (a fused CuPy gather kernel for ``im2col``/``col2im`` and
batched ``cupy.matmul`` on cuBLAS). This module registers the algorithm ``'gpu_gemm'``,
which ``'auto'`` picks for ungrouped convolutions on the GPU. It computes the same numbers
as ``'reference'`` (the same kernels and GEMMs in the same order) with one difference: the
forward's column matrix is kept in the workspace and reused by the weight gradient, so a
training step runs one ``im2col`` per convolution instead of two. Columns larger than
:data:`KEEP_COLS_BYTES` are recomputed instead (large ImageNet batches), bounding the
extra memory.

The functions are array-module generic (``cupy`` or ``numpy``), so ``algorithm='gpu_gemm'``
also runs, and is tested, on the CPU.
"""

from __future__ import annotations

from .. import backend
from .conv import (ConvAlgorithm, ConvGeometry, _forward_from_cols, _grouped_cols, reference_backward_input,
                   register_conv_algorithm)

#: the largest column matrix (bytes) kept from forward to backward; larger ones are recomputed
KEEP_COLS_BYTES = 512 << 20


def gemm_forward(x, w, b, geo: ConvGeometry, workspace=None):
    """Forward ``out = W @ im2col(x) + b`` per group; keeps the columns in ``workspace['cols']``."""
    cols = _grouped_cols(x, geo)                                   # (N, G, K, L)
    if workspace is not None and cols.nbytes <= KEEP_COLS_BYTES:
        workspace["cols"] = cols
    return _forward_from_cols(cols, w, b, geo)


def gemm_backward_weight(grad, x, geo: ConvGeometry, workspace=None):
    """Weight gradient ``dW = sum_n dout[n] @ cols[n]^T`` with the forward's columns when kept."""
    xp = backend.get_array_module(grad)
    cols = workspace.pop("cols", None) if workspace is not None else None
    if cols is None:
        cols = _grouped_cols(x, geo)
    Og = geo.C_out // geo.groups
    grad_mat = grad.reshape(geo.N, geo.groups, Og, geo.OH * geo.OW)      # (N, G, Og, L)
    dw = xp.matmul(grad_mat, xp.swapaxes(cols, -1, -2))          # (N, G, Og, K)
    return dw.sum(axis=0).reshape(geo.w_shape)


def gemm_supported(geometry: ConvGeometry, device: str) -> bool:
    """``'auto'`` uses this algorithm on the GPU for ungrouped convolutions."""
    return device != "cpu" and geometry.groups == 1


GPU_GEMM = ConvAlgorithm("gpu_gemm", gemm_forward, reference_backward_input, gemm_backward_weight, gemm_supported)
register_conv_algorithm(GPU_GEMM)

__all__ = ["gemm_forward", "gemm_backward_weight", "gemm_supported", "GPU_GEMM", "KEEP_COLS_BYTES"]
