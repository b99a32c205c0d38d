"""Pooling kernels against naive per-pixel loops (CPU) and against the CPU kernels (GPU twins)."""

import itertools

import numpy as np
import pytest

from minires import backend
from minires.kernels import pooling as K

# (H, W, KH, KW, SH, SW, PH, PW): odd, non-square, overlapping, padded, stride > kernel
WINDOWS = [
    (5, 5, 2, 2, 2, 2, 0, 0),
    (7, 6, 3, 3, 1, 1, 1, 1),
    (7, 9, 3, 2, 2, 1, 1, 0),
    (6, 5, 1, 1, 3, 2, 0, 0),
    (8, 7, 5, 3, 2, 3, 2, 1),
    (4, 4, 4, 4, 1, 1, 2, 2),
    (9, 4, 2, 4, 3, 1, 1, 2),
    (3, 3, 3, 3, 1, 1, 0, 0),
]


def naive_max_pool(x, KH, KW, SH, SW, PH, PW):  # noqa: N803
    """Per-pixel loops with PyTorch's rule: first max wins, NaN always takes over."""
    N, C, H, W = x.shape
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    out = np.empty((N, C, OH, OW), x.dtype)
    where = np.empty((N, C, OH, OW, 2), int)
    for n, c, oh, ow in itertools.product(range(N), range(C), range(OH), range(OW)):
        best, best_pos = -np.inf, None
        for i, j in itertools.product(range(KH), range(KW)):
            h, w = oh * SH - PH + i, ow * SW - PW + j
            if not (0 <= h < H and 0 <= w < W):
                continue
            if best_pos is None:
                best_pos = (h, w)  # the first in-bounds element stands if nothing beats -inf
            v = x[n, c, h, w]
            if v > best or np.isnan(v):
                best, best_pos = v, (h, w)
        out[n, c, oh, ow] = best
        where[n, c, oh, ow] = best_pos
    return out, where


def naive_max_pool_backward(grad, where, x_shape):
    gx = np.zeros(x_shape, grad.dtype)
    for n, c, oh, ow in itertools.product(*map(range, grad.shape)):
        h, w = where[n, c, oh, ow]
        gx[n, c, h, w] += grad[n, c, oh, ow]
    return gx


def naive_avg_pool(x, KH, KW, SH, SW, PH, PW):  # noqa: N803
    N, C, H, W = x.shape
    padded = np.zeros((N, C, H + 2 * PH, W + 2 * PW), x.dtype)
    padded[:, :, PH:PH + H, PW:PW + W] = x
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    out = np.empty((N, C, OH, OW), x.dtype)
    for oh, ow in itertools.product(range(OH), range(OW)):
        out[:, :, oh, ow] = padded[:, :, oh * SH:oh * SH + KH, ow * SW:ow * SW + KW].sum(axis=(2, 3)) / (KH * KW)
    return out


def naive_avg_pool_backward(grad, x_shape, KH, KW, SH, SW, PH, PW):  # noqa: N803
    N, C, H, W = x_shape
    padded = np.zeros((N, C, H + 2 * PH, W + 2 * PW), grad.dtype)
    for oh, ow in itertools.product(range(grad.shape[2]), range(grad.shape[3])):
        padded[:, :, oh * SH:oh * SH + KH, ow * SW:ow * SW + KW] += grad[:, :, oh:oh + 1, ow:ow + 1] / (KH * KW)
    return padded[:, :, PH:PH + H, PW:PW + W]


def naive_adaptive(x, OH, OW):  # noqa: N803
    N, C, H, W = x.shape
    out = np.empty((N, C, OH, OW), x.dtype)
    for i, j in itertools.product(range(OH), range(OW)):
        h0, h1 = (i * H) // OH, -((-(i + 1) * H) // OH)
        w0, w1 = (j * W) // OW, -((-(j + 1) * W) // OW)
        out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


@pytest.mark.parametrize("with_nan", [False, True])  # the fast path, and the NaN-aware path
@pytest.mark.parametrize("window", WINDOWS)
def test_max_pool_matches_naive_loops(rng, window, with_nan):
    H, W, *win = window
    # small integers make ties common; -inf (and NaN) test the special cases
    x = rng.integers(-3, 3, size=(2, 3, H, W)).astype(np.float64)
    if with_nan:
        x[0, 0, 0, 0] = np.nan
        x[1, 2, -1, -1] = np.nan
        x[0, 1, :3, :3] = np.nan
    x[1, 1, :2, :2] = -np.inf
    out, argmax = K.max_pool2d_forward_cpu(x, *win)
    ref, where = naive_max_pool(x, *win)
    np.testing.assert_array_equal(out, ref)
    grad = rng.standard_normal(out.shape)
    gx = K.max_pool2d_backward_cpu(grad, argmax, x.shape, *win)
    np.testing.assert_allclose(gx, naive_max_pool_backward(grad, where, x.shape), rtol=1e-12, atol=1e-12)


def test_max_pool_all_neg_inf_window_points_at_first_in_bounds_pixel():
    x = np.full((1, 1, 3, 3), -np.inf)
    out, argmax = K.max_pool2d_forward_cpu(x, 3, 3, 2, 2, 1, 1)
    assert np.all(out == -np.inf)
    gx = K.max_pool2d_backward_cpu(np.ones(out.shape), argmax, x.shape, 3, 3, 2, 2, 1, 1)
    expected = np.zeros((3, 3))
    expected[0, 0] = 1
    expected[0, 1] = 1  # window (0, 1) starts at column 1
    expected[1, 0] = 1  # window (1, 0) starts at row 1
    expected[1, 1] = 1
    np.testing.assert_array_equal(gx[0, 0], expected)


@pytest.mark.parametrize("window", WINDOWS)
def test_avg_pool_matches_naive_loops(rng, window):
    H, W, *win = window
    x = rng.standard_normal((2, 3, H, W))
    out = K.avg_pool2d_forward_cpu(x, *win)
    np.testing.assert_allclose(out, naive_avg_pool(x, *win), rtol=1e-12, atol=1e-14)
    grad = rng.standard_normal(out.shape)
    np.testing.assert_allclose(K.avg_pool2d_backward_cpu(grad, x.shape, *win),
                               naive_avg_pool_backward(grad, x.shape, *win), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("H, W, OH, OW", [(6, 6, 1, 1), (8, 4, 2, 2), (7, 5, 3, 2), (5, 7, 4, 4),
                                          (3, 2, 5, 7), (1, 1, 2, 3)])
def test_adaptive_avg_pool_matches_naive_bins(rng, H, W, OH, OW):  # noqa: N803
    x = rng.standard_normal((2, 3, H, W))
    out = K.adaptive_avg_pool2d_forward(x, OH, OW)
    np.testing.assert_allclose(out, naive_adaptive(x, OH, OW), rtol=1e-12, atol=1e-14)
    # backward is the adjoint of forward: <A x, g> == <x, A^T g>
    grad = rng.standard_normal(out.shape)
    gx = K.adaptive_avg_pool2d_backward(grad, x.shape)
    assert gx.shape == x.shape
    np.testing.assert_allclose((out * grad).sum(), (x * gx).sum(), rtol=1e-12)


def test_adaptive_bins_follow_pytorch_rule():
    starts, ends = K.adaptive_bins(10, 4)
    np.testing.assert_array_equal(starts, [0, 2, 5, 7])
    np.testing.assert_array_equal(ends, [3, 5, 8, 10])


def test_pool_output_size():
    assert K.pool_output_size(7, 3, 2, 1) == 4
    assert K.pool_output_size(2, 3, 1, 0) == 0


# --- GPU twins ----------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", WINDOWS)
def test_gpu_pooling_matches_cpu(rng, window, dtype):
    H, W, *win = window
    x = rng.integers(-3, 3, size=(2, 3, H, W)).astype(dtype)
    x[0, 0, 0, 0] = np.nan
    x[1, 1, :2, :2] = -np.inf
    xg = backend.to_device(x, "cuda")
    out, argmax = K.max_pool2d_forward(x, *win)
    out_g, argmax_g = K.max_pool2d_forward(xg, *win)
    np.testing.assert_array_equal(backend.as_numpy(out_g), out)
    np.testing.assert_array_equal(backend.as_numpy(argmax_g), argmax)
    grad = rng.standard_normal(out.shape).astype(dtype)
    gx = K.max_pool2d_backward(grad, argmax, x.shape, *win)
    gx_g = K.max_pool2d_backward(backend.to_device(grad, "cuda"), argmax_g, x.shape, *win)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(backend.as_numpy(gx_g), gx, rtol=tol, atol=tol)

    x = rng.standard_normal((2, 3, H, W)).astype(dtype)
    out = K.avg_pool2d_forward(x, *win)
    out_g = K.avg_pool2d_forward(backend.to_device(x, "cuda"), *win)
    np.testing.assert_allclose(backend.as_numpy(out_g), out, rtol=tol, atol=tol)
    gx = K.avg_pool2d_backward(grad, x.shape, *win)
    gx_g = K.avg_pool2d_backward(backend.to_device(grad, "cuda"), x.shape, *win)
    np.testing.assert_allclose(backend.as_numpy(gx_g), gx, rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("H, W, OH, OW", [(8, 8, 1, 1), (7, 5, 3, 2), (3, 2, 5, 7)])
def test_gpu_adaptive_avg_pool_matches_cpu(rng, H, W, OH, OW):  # noqa: N803
    x = rng.standard_normal((2, 3, H, W)).astype(np.float32)
    out = K.adaptive_avg_pool2d_forward(x, OH, OW)
    out_g = K.adaptive_avg_pool2d_forward(backend.to_device(x, "cuda"), OH, OW)
    np.testing.assert_allclose(backend.as_numpy(out_g), out, rtol=1e-5, atol=1e-6)
    grad = rng.standard_normal(out.shape).astype(np.float32)
    gx_g = K.adaptive_avg_pool2d_backward(backend.to_device(grad, "cuda"), x.shape)
    np.testing.assert_allclose(backend.as_numpy(gx_g), K.adaptive_avg_pool2d_backward(grad, x.shape),
                               rtol=1e-5, atol=1e-6)
