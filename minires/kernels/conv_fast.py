"""Fast CPU convolution: channels-last (NHWC) im2col + GEMM in cache-sized batch chunks.

The reference in :mod:`minires.kernels.conv` unfolds the whole batch in NCHW order and
folds gradients back with ``col2im``. This module computes the same numbers faster on
NumPy, and registers itself with the algorithm switch of :mod:`minires.kernels.conv` under
the name ``'nhwc'`` (picked by ``'auto'`` for CPU problems with ``groups == 1``;
``set_conv_algorithm('reference')`` restores the readable path):

- **Channels-last memory.** Results are returned as NCHW-*shaped* arrays whose memory is
  NHWC (``out_nhwc.transpose(0, 3, 1, 2)``, PyTorch's "channels_last"), so the next
  convolution reads its input with no copy, and every patch row of the column matrix is a
  run of ``C`` contiguous floats. Elementwise NumPy ops keep that layout (``order='K'``).
- **Chunked columns.** The batch is unfolded a few images at a time into one reused buffer
  of about ``_CHUNK_BYTES`` (a single strided ``copyto`` from an ``as_strided`` patch view
  of a zero-bordered padded copy), so the column matrix stays in cache while the GEMM
  reads it, and no multi-megabyte temporary is allocated per call.
- **Row unfold for stride 1 in height.** Only the width is unfolded (``KW*C`` values per
  row instead of ``KH*KW*C``); the ``KH`` kernel rows become ``KH`` GEMMs over row-shifted
  contiguous blocks of that matrix (see :func:`_unfold_rows_chunk`). This writes a third
  of the columns of a 3x3 convolution.
- **Small-matrix GEMM blocks.** Long products are issued as stacks of blocks small enough
  for OpenBLAS's unpacked small-matrix kernels (see :func:`matmul_rows`).
- **Threads.** The batch is split across threads (:mod:`minires.kernels.parallel`).
- **Input gradient as a convolution.** For stride 1 (and ``P <= K - 1``, finite weights),
  ``dx`` is the convolution of ``dout`` with the spatially flipped, in/out-swapped weight
  and padding ``K - 1 - P``; otherwise the column gradient is scattered back slice by
  slice (never ``np.add.at``), which keeps PyTorch's NaN pattern for NaN/inf weights.
- **Weight gradient** ``dW = sum_chunks cols^T @ dout`` with the columns recomputed chunk
  by chunk (no whole-batch column matrix is kept between forward and backward).

Shapes follow :mod:`minires.kernels.conv`: ``x (N, C, H, W)``, ``w (C_out, C, KH, KW)``,
``out (N, C_out, OH, OW)``; ``K = KH*KW*C`` is the patch length, ``L = OH*OW``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import config
from .conv import ConvAlgorithm, ConvGeometry, register_conv_algorithm
from .layout import is_channels_last, to_nhwc
from .parallel import chunk_length, clear_scratch, for_each_chunk, parallel_for, parallel_sum, scratch, \
    sum_over_chunks

#: target size of one chunk's column matrix (per thread): about the L2 cache (benchmarks/RESULTS.md)
_CHUNK_BYTES = 2 << 20

#: free this thread's cached scratch arrays (they are re-made on the next call)
clear_buffers = clear_scratch


def _chunk(n_total: int, row_bytes: int) -> int:
    return chunk_length(n_total, row_bytes, _CHUNK_BYTES)


#: OpenBLAS (0.3.x, x86-64) runs products with ``M*N*K`` up to about 1e6 through its
#: "small matrix" kernels, which skip packing the operands and were faster on the ResNet
#: shapes (benchmarks/RESULTS.md); so long products are issued as a stack of such blocks
#: (one NumPy call; NumPy loops over the stack in C)
_SMALL_GEMM_MNK = 1_000_000
#: row block of the weight-gradient products ``cols^T @ dout`` (the best one measured)
_WGRAD_ROWS = 256


def _row_block(K: int, N: int) -> int:
    """Rows per block so that ``rows*K*N`` stays within OpenBLAS's small-matrix range."""
    rows = 1
    while rows * 2 * K * N <= _SMALL_GEMM_MNK and rows < 4096:
        rows *= 2
    return max(16, rows)


def matmul_rows(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = a @ b`` for a tall ``a (M, K)``, issued as a stack of row blocks (see above)."""
    M, K = a.shape
    block = _row_block(K, b.shape[1])
    full = (M // block) * block
    if block >= M or full == 0:
        return np.matmul(a, b, out=out)
    np.matmul(a[:full].reshape(-1, block, K), b, out=out[:full].reshape(-1, block, b.shape[1]))
    if full < M:
        np.matmul(a[full:], b, out=out[full:])
    return out


def add_matmul_tn(a: np.ndarray, b: np.ndarray, acc: np.ndarray) -> None:
    """``acc += a^T @ b`` for tall ``a (M, K)``, ``b (M, N)``, summed over row blocks."""
    M, K = a.shape
    N = b.shape[1]
    block = _WGRAD_ROWS
    full = (M // block) * block
    if N > 32 or block >= M or full == 0:   # wide outputs: one product is as fast
        acc += a.T @ b
        return
    parts = np.matmul(a[:full].reshape(-1, block, K).transpose(0, 2, 1), b[:full].reshape(-1, block, N))
    acc += parts.sum(axis=0)
    if full < M:
        acc += a[full:].T @ b[full:]


def _patch_view(padded: np.ndarray, OH: int, OW: int, KH: int, KW: int, SH: int, SW: int) -> np.ndarray:  # noqa: N803
    """``(n, OH, OW, KH, KW, C)`` view: ``view[n, p, q, i, j, c] = padded[n, p*SH + i, q*SW + j, c]``."""
    n, _, _, C = padded.shape
    s0, s1, s2, s3 = padded.strides
    return as_strided(padded, (n, OH, OW, KH, KW, C), (s0, s1 * SH, s2 * SW, s1, s2, s3), writeable=False)


def _unfold_chunk(xh, start: int, n: int, geo: ConvGeometry, C: int, n_chunk: int) -> np.ndarray:
    """Columns ``(n*OH*OW, KH*KW*C)`` of images ``start:start+n`` in this thread's reused buffers."""
    H, W = xh.shape[1], xh.shape[2]
    padded = scratch(f"pad{geo.PH},{geo.PW}", (n_chunk, H + 2 * geo.PH, W + 2 * geo.PW, C), xh.dtype, zero=True)
    cols = scratch("cols", (n_chunk * geo.OH * geo.OW, geo.KH * geo.KW * C), xh.dtype)
    p = padded[:n]
    p[:, geo.PH:geo.PH + H, geo.PW:geo.PW + W, :] = xh[start:start + n]   # the border stays zero
    c = cols[:n * geo.OH * geo.OW]
    np.copyto(c.reshape(n, geo.OH, geo.OW, geo.KH, geo.KW, C),
              _patch_view(p, geo.OH, geo.OW, geo.KH, geo.KW, geo.SH, geo.SW))
    return c


def _pointwise_source(xh, geo: ConvGeometry):
    """For a 1x1 unpadded convolution, the (subsampled) input as ``(N, OH, OW, C)``; else None."""
    if geo.KH == 1 and geo.KW == 1 and geo.PH == 0 and geo.PW == 0:
        return xh if geo.SH == 1 and geo.SW == 1 else xh[:, ::geo.SH, ::geo.SW, :]
    return None


def _uses_row_unfold(geo: ConvGeometry) -> bool:
    """The row unfold (below) for stride-1-in-height convolutions, unless ``config`` ``conv_row_unfold`` is off."""
    return geo.SH == 1 and geo.KH > 1 and config.get("conv_row_unfold")


def _unfold_rows_chunk(xh, start: int, n: int, geo: ConvGeometry, C: int, n_chunk: int) -> np.ndarray:
    """Width-only unfold of images ``start:start+n``: ``(n, HP*OW, KW*C)`` with
    ``rows[m, hp*OW + q, j*C + c] = x_padded[m, hp, q*SW + j, c]`` (``HP = H + 2*PH``).

    With stride 1 in height, the patch rows of output row ``p`` and kernel row ``i`` are
    the ``OW`` consecutive rows starting at ``(p + i)*OW``, so for each ``i`` the whole
    image is one contiguous block ``rows[:, i*OW : i*OW + OH*OW]``: the convolution is
    ``KH`` products of ``(OH*OW, KW*C) @ (KW*C, C_out)`` per image, and the unfold writes
    ``KW`` (not ``KH*KW``) copies of the input.
    """
    H, W = xh.shape[1], xh.shape[2]
    HP = H + 2 * geo.PH
    # entries that read the zero padding are never written, so the buffer (one per
    # geometry) keeps the zeros it was created with; each kernel column j is one slice copy
    rows = scratch(f"rows{geo.PH},{geo.PW},{geo.KW},{geo.SW},{H},{W}", (n_chunk, HP * geo.OW, geo.KW * C), xh.dtype,
                   zero=True)
    r = rows[:n]
    r5 = r.reshape(n, HP, geo.OW, geo.KW, C)
    src = xh[start:start + n]
    if geo.SW == 1:
        # stride 1: for an interior output column q (every tap inside the input) the KW*C
        # values are one contiguous run of the input row, so all interior columns are one
        # strided copy of KW*C-float runs (faster than KW copies of C-float runs); the few
        # border columns are copied one by one
        q0, q1 = geo.PW, W - geo.KW + geo.PW
        if q1 >= q0:
            s0, s1, s2, s3 = src.strides
            r5[:, geo.PH:geo.PH + H, q0:q1 + 1] = as_strided(
                src[:, :, q0 - geo.PW:], (n, H, q1 - q0 + 1, geo.KW, C), (s0, s1, s2, s2, s3), writeable=False)
        for q in [q for q in range(geo.OW) if not q0 <= q <= q1]:   # the border (every column if q1 < q0)
            j_lo, j_hi = max(0, geo.PW - q), min(geo.KW - 1, W - 1 + geo.PW - q)   # taps inside the input
            if j_hi >= j_lo:
                r5[:, geo.PH:geo.PH + H, q, j_lo:j_hi + 1, :] = src[:, :, q - geo.PW + j_lo:q - geo.PW + j_hi + 1, :]
        return r
    for j in range(geo.KW):
        # output column q reads input column q*SW + j - PW; keep the q that land inside
        q_lo = max(0, -(-(geo.PW - j) // geo.SW))
        q_hi = min(geo.OW - 1, (W - 1 + geo.PW - j) // geo.SW)
        if q_hi < q_lo:
            continue
        first = q_lo * geo.SW + j - geo.PW
        r5[:, geo.PH:geo.PH + H, q_lo:q_hi + 1, j, :] = src[:, :, first:first + (q_hi - q_lo) * geo.SW + 1:geo.SW, :]
    return r


def _conv_rows_chunk(xh, w_rows: np.ndarray, geo: ConvGeometry, out3: np.ndarray, n_chunk: int, lo: int, hi: int,
                     epilogue=None):
    """Row-unfold convolution of images ``lo:hi`` into ``out3 (N, OH*OW, C_out)``;
    ``w_rows (KH, KW*C, C_out)``; ``epilogue`` as in :func:`_conv_nhwc`."""
    L, n = geo.OH * geo.OW, hi - lo
    rows = _unfold_rows_chunk(xh, lo, n, geo, xh.shape[3], n_chunk)
    out = out3[lo:hi]
    partial = scratch("rows_out", (n_chunk, L, w_rows.shape[2]), xh.dtype)[:n]
    for i in range(geo.KH):
        block = rows[:, i * geo.OW:i * geo.OW + L]                 # (n, L, KW*C), one image per matrix
        np.matmul(block, w_rows[i], out=out if i == 0 else partial)
        if i:
            out += partial
    if epilogue is not None:
        epilogue(out.reshape(n, -1), lo, n)


def _conv_nhwc(xh: np.ndarray, wmat: np.ndarray, geo: ConvGeometry, epilogue=None) -> np.ndarray:
    """Channels-last convolution: ``xh (N, H, W, C)``, ``wmat (KH*KW*C, C_out)`` -> ``(N*OH*OW, C_out)``.

    ``geo`` gives kernel, stride, padding and output size (its channel counts are not used).
    ``epilogue(rows, start, n)``, when given, is called by the thread that computed each
    chunk of images ``start:start+n`` right after its GEMMs, with that chunk's output as
    ``rows (n, OH*OW*C_out)`` (a view to update in place, still in cache): the place to
    apply a following per-channel affine map and activation without another pass over memory.
    """
    N, C = xh.shape[0], xh.shape[3]
    L, K = geo.OH * geo.OW, geo.KH * geo.KW * C
    out2d = np.empty((N * L, wmat.shape[1]), xh.dtype)
    src = _pointwise_source(xh, geo)
    if src is None and _uses_row_unfold(geo):
        w_rows = wmat.reshape(geo.KH, geo.KW * C, wmat.shape[1])
        n_rows = _chunk(N, (geo.H + 2 * geo.PH) * geo.OW * geo.KW * C * xh.itemsize)
        out3 = out2d.reshape(N, L, wmat.shape[1])
        for_each_chunk(lambda lo, hi: _conv_rows_chunk(xh, w_rows, geo, out3, n_rows, lo, hi, epilogue), N, n_rows)
        return out2d
    n_chunk = _chunk(N, L * K * xh.itemsize)
    if src is not None and epilogue is None:     # a 1x1 convolution is one GEMM over each thread's pixels
        parallel_for(lambda lo, hi: matmul_rows(np.ascontiguousarray(src[lo:hi]).reshape(-1, C), wmat,
                                                out2d[lo * L:hi * L]), N, grain=n_chunk)
        return out2d

    def conv_chunk(lo, hi):
        if src is not None:
            cols = np.ascontiguousarray(src[lo:hi]).reshape(-1, C)
        else:
            cols = _unfold_chunk(xh, lo, hi - lo, geo, C, n_chunk)
        out = out2d[lo * L:hi * L]
        matmul_rows(cols, wmat, out)
        if epilogue is not None:
            epilogue(out.reshape(hi - lo, -1), lo, hi - lo)

    for_each_chunk(conv_chunk, N, n_chunk)
    return out2d


def _weight_matrix(w: np.ndarray) -> np.ndarray:
    """``w (C_out, C, KH, KW)`` as ``(KH*KW*C, C_out)`` matching the NHWC patch order ``(i, j, c)``."""
    C_out = w.shape[0]
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(-1, C_out)


def nhwc_forward(x, w, b, geo: ConvGeometry, workspace=None, epilogue=None):
    """Convolution forward; returns ``(N, C_out, OH, OW)`` stored channels-last.

    ``epilogue`` (see :func:`_conv_nhwc`) runs on each chunk after the bias is added.
    """
    if b is not None and epilogue is not None:
        inner, bias_t = epilogue, np.tile(b, geo.OH * geo.OW)

        def epilogue(rows, start, n):
            rows += bias_t
            inner(rows, start, n)

        b = None
    out2d = _conv_nhwc(to_nhwc(x), _weight_matrix(w), geo, epilogue)
    if b is not None:
        out2d += b
    return out2d.reshape(geo.N, geo.OH, geo.OW, geo.C_out).transpose(0, 3, 1, 2)


def nhwc_backward_input(grad, w, geo: ConvGeometry, workspace=None):
    """Input gradient ``(N, C, H, W)`` stored channels-last."""
    gh = to_nhwc(grad)                                               # (N, OH, OW, C_out)
    if geo.SH == 1 and geo.SW == 1 and geo.PH <= geo.KH - 1 and geo.PW <= geo.KW - 1 and np.isfinite(w).all():
        # dx = dout (*) rot180(w) with channels swapped and padding K - 1 - P (a non-finite
        # weight would meet that padding's zeros and give 0 * inf = NaN where the adjoint
        # has no term, so such weights take the scatter path below)
        w_flip = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)            # (C, C_out, KH, KW)
        flipped = ConvGeometry(geo.N, geo.C_out, geo.OH, geo.OW, geo.C, geo.KH, geo.KW, 1, 1,
                               geo.KH - 1 - geo.PH, geo.KW - 1 - geo.PW, geo.H, geo.W, 1)
        dx2d = _conv_nhwc(gh, _weight_matrix(w_flip), flipped)
        return dx2d.reshape(geo.N, geo.H, geo.W, geo.C).transpose(0, 3, 1, 2)
    return _backward_input_scatter(gh, w, geo).transpose(0, 3, 1, 2)


def _backward_input_scatter(gh, w, geo: ConvGeometry):
    """``dx`` (NHWC) for any stride: column gradients ``dout @ W`` added back slice by slice."""
    N, OH, OW, C_out = gh.shape
    L, K, C = OH * OW, geo.KH * geo.KW * geo.C, geo.C
    wmat_t = np.ascontiguousarray(_weight_matrix(w).T)              # (C_out, K)
    HP = max(geo.H + 2 * geo.PH, geo.SH * (OH - 1) + geo.KH)
    WP = max(geo.W + 2 * geo.PW, geo.SW * (OW - 1) + geo.KW)
    dx = np.empty((N, geo.H, geo.W, C), gh.dtype)
    n_chunk = _chunk(N, L * K * gh.itemsize)
    g2d = gh.reshape(N * L, C_out)

    def scatter_chunk(lo, hi):
        n = hi - lo
        dcols = scratch("dcols", (n_chunk * L, K), gh.dtype)[:n * L]
        matmul_rows(g2d[lo * L:hi * L], wmat_t, dcols)
        d6 = dcols.reshape(n, OH, OW, geo.KH, geo.KW, C)
        padded = scratch("dpad", (n_chunk, HP, WP, C), gh.dtype)[:n]
        padded.fill(0)
        for i in range(geo.KH):
            for j in range(geo.KW):
                # within one offset (i, j) the slice touches distinct pixels, so += is exact
                padded[:, i:i + geo.SH * OH:geo.SH, j:j + geo.SW * OW:geo.SW, :] += d6[:, :, :, i, j, :]
        dx[lo:hi] = padded[:, geo.PH:geo.PH + geo.H, geo.PW:geo.PW + geo.W, :]

    for_each_chunk(scatter_chunk, N, n_chunk)
    return dx


def nhwc_backward_weight(grad, x, geo: ConvGeometry, workspace=None):
    """Weight gradient ``(C_out, C, KH, KW)``: ``sum over chunks cols^T @ dout``."""
    xh = to_nhwc(x)
    gh = to_nhwc(grad)
    N, C = xh.shape[0], xh.shape[3]
    L, K = geo.OH * geo.OW, geo.KH * geo.KW * C
    g2d = gh.reshape(N * L, geo.C_out)
    src = _pointwise_source(xh, geo)
    n_chunk = _chunk(N, L * K * x.itemsize)
    if src is not None:      # a 1x1 convolution: one product over each thread's pixels
        def add_pixels(lo, hi):
            dw = np.zeros((K, geo.C_out), x.dtype)
            add_matmul_tn(np.ascontiguousarray(src[lo:hi]).reshape(-1, C), g2d[lo * L:hi * L], dw)
            return dw

        dw = parallel_sum(add_pixels, N, grain=n_chunk)
    elif _uses_row_unfold(geo):
        n_rows = _chunk(N, (geo.H + 2 * geo.PH) * geo.OW * geo.KW * C * x.itemsize)
        g3 = gh.reshape(N, L, geo.C_out)

        def add_rows_chunk(lo, hi, dw):
            # dW[i] = sum over images of rows_i^T @ dout, rows_i the i-th shifted block
            rows = _unfold_rows_chunk(xh, lo, hi - lo, geo, C, n_rows)
            for i in range(geo.KH):
                block = rows[:, i * geo.OW:i * geo.OW + L]
                dw[i] += np.matmul(block.transpose(0, 2, 1), g3[lo:hi]).sum(axis=0)

        dw = sum_over_chunks(add_rows_chunk, N, n_rows, (geo.KH, geo.KW * C, geo.C_out), x.dtype)
    else:
        def add_chunk(lo, hi, dw):
            add_matmul_tn(_unfold_chunk(xh, lo, hi - lo, geo, C, n_chunk), g2d[lo * L:hi * L], dw)

        dw = sum_over_chunks(add_chunk, N, n_chunk, (K, geo.C_out), x.dtype)
    return np.ascontiguousarray(dw.reshape(geo.KH, geo.KW, C, geo.C_out).transpose(3, 2, 0, 1))


def nhwc_supported(geometry: ConvGeometry, device: str) -> bool:
    """``'auto'`` uses the NHWC path on the CPU for ungrouped convolutions."""
    return device == "cpu" and geometry.groups == 1


NHWC = ConvAlgorithm("nhwc", nhwc_forward, nhwc_backward_input, nhwc_backward_weight, nhwc_supported)
register_conv_algorithm(NHWC)

__all__ = ["nhwc_forward", "nhwc_backward_input", "nhwc_backward_weight", "nhwc_supported",
           "to_nhwc", "is_channels_last", "clear_buffers", "NHWC"]
