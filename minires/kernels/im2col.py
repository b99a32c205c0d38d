"""``im2col`` / ``col2im``: unfold NCHW image patches into columns and fold them back.

Layout of the columns: ``(N, C, KH, KW, OH, OW)``, where entry
``cols[n, c, i, j, oh, ow] = x_padded[n, c, oh*SH + i, ow*SW + j]`` and ``x_padded`` is
``x`` with ``PH`` zero rows above and below and ``PW`` zero columns left and right. With
this layout a convolution is one matrix product: ``cols.reshape(N, C*KH*KW, OH*OW)``
multiplied by the weight ``(C_out, C*KH*KW)``.

``col2im`` is the adjoint of ``im2col`` (``<col2im(c), x> == <c, im2col(x)>``): it adds
every column entry back onto the pixel it was read from, which is the gradient of
``im2col`` and so of the input of a convolution.

Each operation has a CPU function (NumPy, a loop over the ``KH*KW`` kernel offsets that
moves whole strided slices, never single pixels), a GPU twin (a CuPy ``ElementwiseKernel``
with one thread per output element; ``col2im`` gathers, so it needs no atomics) and a
three-line dispatcher.
"""

from __future__ import annotations

import numpy as np

from .. import backend


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution/pooling window along one axis.

    ``out = (size + 2*padding - kernel) // stride + 1`` (PyTorch's formula, no dilation).

    Args:
        size: input length ``H`` or ``W``.
        kernel: window length ``KH`` or ``KW``.
        stride: step ``SH`` or ``SW`` (>= 1).
        padding: zeros added on each side ``PH`` or ``PW`` (>= 0).

    Returns:
        The output length ``OH`` or ``OW`` (may be <= 0 when the window does not fit;
        callers validate).
    """
    return (size + 2 * padding - kernel) // stride + 1


# --- CPU ---------------------------------------------------------------------------------

def im2col_cpu(x: np.ndarray, KH: int, KW: int, SH: int, SW: int, PH: int, PW: int) -> np.ndarray:  # noqa: N803
    """Unfold an NCHW NumPy array into columns ``(N, C, KH, KW, OH, OW)`` (see module doc)."""
    N, C, H, W = x.shape
    OH = conv_output_size(H, KH, SH, PH)
    OW = conv_output_size(W, KW, SW, PW)
    if PH or PW:
        x = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    cols = np.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    for i in range(KH):
        i_end = i + SH * OH
        for j in range(KW):
            # every output position reads pixel (oh*SH + i, ow*SW + j): one strided slice
            cols[:, :, i, j] = x[:, :, i:i_end:SH, j:j + SW * OW:SW]
    return cols


def col2im_cpu(cols: np.ndarray, x_shape, SH: int, SW: int, PH: int, PW: int) -> np.ndarray:  # noqa: N803
    """Fold columns ``(N, C, KH, KW, OH, OW)`` back to an NCHW array of shape ``x_shape``, summing overlaps."""
    N, C, KH, KW, OH, OW = cols.shape
    H, W = x_shape[2], x_shape[3]
    # big enough for every slice below, even when the last rows/columns are never read
    HP = max(H + 2 * PH, SH * (OH - 1) + KH)
    WP = max(W + 2 * PW, SW * (OW - 1) + KW)
    padded = np.zeros((N, C, HP, WP), dtype=cols.dtype)
    for i in range(KH):
        i_end = i + SH * OH
        for j in range(KW):
            # within one offset (i, j) the slice touches distinct pixels, so += is exact
            padded[:, :, i:i_end:SH, j:j + SW * OW:SW] += cols[:, :, i, j]
    return padded[:, :, PH:PH + H, PW:PW + W]


# --- GPU (CuPy) --------------------------------------------------------------------------

_IM2COL_GPU = (
    "minires_im2col",
    "raw T img, int32 H, int32 W, int32 OH, int32 OW, int32 KH, int32 KW, "
    "int32 SH, int32 SW, int32 PH, int32 PW",
    "T col",
    """
    // i indexes col (N, C, KH, KW, OH, OW); nc = n*C + c
    const ptrdiff_t nc = i / ((ptrdiff_t)KH * KW * OH * OW);
    const int ky = i / ((ptrdiff_t)KW * OH * OW) % KH;
    const int kx = i / ((ptrdiff_t)OH * OW) % KW;
    const int oy = i / OW % OH;
    const int ox = i % OW;
    const int y = oy * SH + ky - PH;
    const int x = ox * SW + kx - PW;
    if (y >= 0 && y < H && x >= 0 && x < W) {
        col = img[(nc * H + y) * W + x];
    } else {
        col = (T)0;
    }
    """,
)

_COL2IM_GPU = (
    "minires_col2im",
    "raw T col, int32 H, int32 W, int32 OH, int32 OW, int32 KH, int32 KW, "
    "int32 SH, int32 SW, int32 PH, int32 PW",
    "T img",
    """
    // i indexes img (N, C, H, W); gather every column entry that read this pixel
    const ptrdiff_t nc = i / ((ptrdiff_t)H * W);
    const int y = i / W % H + PH;   // row in the padded image
    const int x = i % W + PW;
    // oy*SH + ky == y with 0 <= ky < KH  <=>  ceil((y-KH+1)/SH) <= oy <= floor(y/SH)
    const int oy0 = max(0, (y - KH + SH) / SH);
    const int oy1 = min(OH, y / SH + 1);
    const int ox0 = max(0, (x - KW + SW) / SW);
    const int ox1 = min(OW, x / SW + 1);
    T sum = (T)0;
    for (int oy = oy0; oy < oy1; ++oy) {
        const int ky = y - oy * SH;
        for (int ox = ox0; ox < ox1; ++ox) {
            const int kx = x - ox * SW;
            sum += col[(((nc * KH + ky) * KW + kx) * OH + oy) * (ptrdiff_t)OW + ox];
        }
    }
    img = sum;
    """,
)


def im2col_gpu(x, KH: int, KW: int, SH: int, SW: int, PH: int, PW: int):  # noqa: N803
    """CuPy twin of :func:`im2col_cpu` (one fused kernel, padding handled by bounds checks)."""
    cp = backend.cupy_module()
    x = cp.ascontiguousarray(x)
    N, C, H, W = x.shape
    OH = conv_output_size(H, KH, SH, PH)
    OW = conv_output_size(W, KW, SW, PW)
    cols = cp.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    kernel = backend.elementwise_kernel(*_IM2COL_GPU)
    kernel(x, H, W, OH, OW, KH, KW, SH, SW, PH, PW, cols)
    return cols


def col2im_gpu(cols, x_shape, SH: int, SW: int, PH: int, PW: int):  # noqa: N803
    """CuPy twin of :func:`col2im_cpu` (one thread per pixel gathers its column entries)."""
    cp = backend.cupy_module()
    cols = cp.ascontiguousarray(cols)
    N, C, KH, KW, OH, OW = cols.shape
    H, W = int(x_shape[2]), int(x_shape[3])
    img = cp.empty((N, C, H, W), dtype=cols.dtype)
    kernel = backend.elementwise_kernel(*_COL2IM_GPU)
    kernel(cols, H, W, OH, OW, KH, KW, SH, SW, PH, PW, img)
    return img


# --- dispatchers -------------------------------------------------------------------------

def im2col(x, KH: int, KW: int, SH: int, SW: int, PH: int, PW: int):  # noqa: N803
    """Unfold NCHW patches into columns ``(N, C, KH, KW, OH, OW)``.

    ``cols[n, c, i, j, oh, ow] = x_padded[n, c, oh*SH + i, ow*SW + j]`` with zero padding
    ``PH``/``PW`` on each side.

    Args:
        x: input ``(N, C, H, W)``, NumPy or CuPy.
        KH, KW: kernel height and width.
        SH, SW: strides.
        PH, PW: zero padding on each side.

    Returns:
        An array on ``x``'s device with ``x``'s dtype.
    """
    if backend.is_cupy_array(x):
        return im2col_gpu(x, KH, KW, SH, SW, PH, PW)
    return im2col_cpu(x, KH, KW, SH, SW, PH, PW)


def col2im(cols, x_shape, SH: int, SW: int, PH: int, PW: int):  # noqa: N803
    """Fold columns ``(N, C, KH, KW, OH, OW)`` back to an image of shape ``x_shape``.

    The adjoint of :func:`im2col`: each column entry is added to the pixel it was read
    from; entries that were read from the padding are dropped.

    Args:
        cols: columns ``(N, C, KH, KW, OH, OW)``, NumPy or CuPy.
        x_shape: ``(N, C, H, W)`` of the image the columns came from.
        SH, SW: strides.
        PH, PW: padding on each side.

    Returns:
        An array ``(N, C, H, W)`` on ``cols``' device with ``cols``' dtype.
    """
    if backend.is_cupy_array(cols):
        return col2im_gpu(cols, x_shape, SH, SW, PH, PW)
    return col2im_cpu(cols, x_shape, SH, SW, PH, PW)


__all__ = ["conv_output_size", "im2col", "col2im", "im2col_cpu", "col2im_cpu", "im2col_gpu",
           "col2im_gpu"]
