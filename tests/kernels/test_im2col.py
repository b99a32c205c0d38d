"""im2col / col2im: naive loop references, adjointness, dtypes, and the CuPy twins."""

import numpy as np
import pytest

from minires import backend
from minires.kernels.im2col import (col2im, col2im_cpu, col2im_gpu, conv_output_size, im2col, im2col_cpu,
                                    im2col_gpu)

# (N, C, H, W, KH, KW, SH, SW, PH, PW)
CONFIGS = [
    (1, 1, 4, 4, 3, 3, 1, 1, 0, 0),
    (2, 3, 5, 7, 3, 3, 1, 1, 1, 1),
    (2, 2, 7, 6, 3, 2, 2, 1, 1, 0),
    (1, 3, 6, 5, 1, 1, 2, 3, 0, 0),   # 1x1 with stride: skipped pixels
    (2, 2, 9, 8, 2, 2, 3, 3, 1, 2),   # stride larger than kernel: gaps
    (1, 2, 5, 5, 5, 5, 1, 1, 2, 2),
    (1, 1, 3, 4, 7, 7, 2, 3, 3, 3),   # kernel larger than the unpadded input
    (3, 1, 8, 3, 4, 3, 2, 1, 0, 1),   # even kernel, non-square, odd sizes
]
IDS = ["N{}C{}H{}W{}_k{}x{}_s{}x{}_p{}x{}".format(*c) for c in CONFIGS]


def naive_im2col(x, KH, KW, SH, SW, PH, PW):
    """Per-pixel loops, straight from the definition."""
    N, C, H, W = x.shape
    OH = (H + 2 * PH - KH) // SH + 1
    OW = (W + 2 * PW - KW) // SW + 1
    cols = np.zeros((N, C, KH, KW, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    for oh in range(OH):
                        for ow in range(OW):
                            y, z = oh * SH + i - PH, ow * SW + j - PW
                            if 0 <= y < H and 0 <= z < W:
                                cols[n, c, i, j, oh, ow] = x[n, c, y, z]
    return cols


def naive_col2im(cols, x_shape, SH, SW, PH, PW):
    N, C, KH, KW, OH, OW = cols.shape
    H, W = x_shape[2:]
    x = np.zeros(x_shape, dtype=cols.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    for oh in range(OH):
                        for ow in range(OW):
                            y, z = oh * SH + i - PH, ow * SW + j - PW
                            if 0 <= y < H and 0 <= z < W:
                                x[n, c, y, z] += cols[n, c, i, j, oh, ow]
    return x


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_im2col_matches_naive_loops(config, rng):
    N, C, H, W, KH, KW, SH, SW, PH, PW = config
    x = rng.standard_normal((N, C, H, W))
    cols = im2col(x, KH, KW, SH, SW, PH, PW)
    expected = naive_im2col(x, KH, KW, SH, SW, PH, PW)
    assert cols.shape == expected.shape
    np.testing.assert_array_equal(cols, expected)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_col2im_matches_naive_loops(config, rng):
    N, C, H, W, KH, KW, SH, SW, PH, PW = config
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    cols = rng.standard_normal((N, C, KH, KW, OH, OW))
    out = col2im(cols, (N, C, H, W), SH, SW, PH, PW)
    assert out.shape == (N, C, H, W)
    np.testing.assert_allclose(out, naive_col2im(cols, (N, C, H, W), SH, SW, PH, PW), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_col2im_is_the_adjoint_of_im2col(config, rng):
    # <col2im(c), x> == <c, im2col(x)> for random x and c
    N, C, H, W, KH, KW, SH, SW, PH, PW = config
    x = rng.standard_normal((N, C, H, W))
    cols = im2col(x, KH, KW, SH, SW, PH, PW)
    c = rng.standard_normal(cols.shape)
    left = float(np.sum(col2im(c, x.shape, SH, SW, PH, PW) * x))
    right = float(np.sum(c * cols))
    assert left == pytest.approx(right, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    cols = im2col(x, 3, 3, 2, 1, 1, 1)
    assert cols.dtype == dtype
    assert col2im(cols, x.shape, 2, 1, 1, 1).dtype == dtype


def test_im2col_of_non_contiguous_input(rng):
    x = rng.standard_normal((3, 2, 6, 7)).transpose(0, 1, 3, 2)  # (3, 2, 7, 6), a strided view
    np.testing.assert_array_equal(im2col(x, 3, 2, 2, 1, 1, 0), naive_im2col(np.ascontiguousarray(x), 3, 2, 2, 1, 1, 0))


def test_nan_stays_local(rng):
    x = rng.standard_normal((1, 1, 5, 5))
    x[0, 0, 2, 2] = np.nan
    cols = im2col(x, 3, 3, 1, 1, 0, 0)
    assert np.isnan(cols).sum() == 9  # pixel (2, 2) sits in all 9 windows of a 3x3 output
    back = col2im(np.nan_to_num(cols, nan=0.0), x.shape, 1, 1, 0, 0)
    assert np.isfinite(back).all()


def test_conv_output_size():
    assert conv_output_size(32, 3, 1, 1) == 32
    assert conv_output_size(32, 3, 2, 1) == 16
    assert conv_output_size(7, 7, 1, 0) == 1
    assert conv_output_size(224, 7, 2, 3) == 112
    assert conv_output_size(5, 2, 3, 0) == 2


# --- GPU twins ---------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gpu_twins_match_cpu(config, dtype, rng):
    cp = backend.cupy_module()
    N, C, H, W, KH, KW, SH, SW, PH, PW = config
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    cols_cpu = im2col_cpu(x, KH, KW, SH, SW, PH, PW)
    cols_gpu = im2col_gpu(cp.asarray(x), KH, KW, SH, SW, PH, PW)
    assert isinstance(cols_gpu, cp.ndarray) and cols_gpu.dtype == dtype
    np.testing.assert_array_equal(cp.asnumpy(cols_gpu), cols_cpu)
    c = rng.standard_normal(cols_cpu.shape).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(cp.asnumpy(col2im_gpu(cp.asarray(c), x.shape, SH, SW, PH, PW)),
                               col2im_cpu(c, x.shape, SH, SW, PH, PW), rtol=rtol, atol=rtol)
    # the dispatchers route CuPy arrays to the twins
    assert isinstance(im2col(cp.asarray(x), KH, KW, SH, SW, PH, PW), cp.ndarray)
    assert isinstance(col2im(cp.asarray(c), x.shape, SH, SW, PH, PW), cp.ndarray)


@pytest.mark.gpu
def test_gpu_col2im_is_the_adjoint(rng):
    cp = backend.cupy_module()
    x = cp.asarray(rng.standard_normal((2, 3, 11, 10)))
    cols = im2col(x, 5, 3, 2, 3, 2, 1)
    c = cp.asarray(rng.standard_normal(cols.shape))
    assert float(cp.sum(col2im(c, x.shape, 2, 3, 2, 1) * x)) == pytest.approx(float(cp.sum(c * cols)), rel=1e-12)
