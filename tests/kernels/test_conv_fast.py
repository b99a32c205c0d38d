"""The channels-last fast convolution (minires/kernels/conv_fast.py) against the reference
im2col kernels, PyTorch and finite differences, in both float dtypes, with the batch split
into many chunks and across threads."""

from __future__ import annotations

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import config
from minires.kernels import conv as K
from minires.kernels import conv_fast as CF
from tests.torch_parity import assert_torch_parity

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}

# (N, C, H, W, C_out, KH, KW, stride, padding)
CASES = [
    (2, 3, 8, 8, 4, 3, 3, 1, 1),
    (3, 4, 7, 9, 5, 3, 3, 2, 1),
    (2, 5, 6, 6, 3, 1, 1, 1, 0),
    (3, 4, 8, 7, 6, 1, 1, 2, 0),
    (2, 2, 9, 8, 3, 3, 2, (2, 1), (1, 0)),
    (1, 3, 7, 7, 2, 5, 5, 1, 2),
    (2, 3, 6, 6, 2, 3, 3, 1, 0),
    (2, 2, 5, 5, 3, 3, 3, 3, 2),
    (5, 4, 6, 6, 4, 3, 3, 1, 1),
]


@pytest.fixture
def small_chunks(monkeypatch):
    """Force one or two images per chunk so the chunk loop and its remainder run."""
    monkeypatch.setattr(CF, "_CHUNK_BYTES", 1)
    CF.clear_buffers()
    yield
    CF.clear_buffers()


@pytest.fixture(params=[True, False], ids=["row-unfold", "full-unfold"])
def unfold(request):
    """Run with the width-only row unfold (stride 1 in height) and with the full unfold."""
    with config.using(conv_row_unfold=request.param):
        yield request.param


def _arrays(case, dtype, rng, channels_last=False):
    N, C, H, W, C_out, KH, KW, stride, padding = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C_out, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    g = K.conv_geometry(x.shape, w.shape, stride, padding)
    grad = rng.standard_normal(g.out_shape).astype(dtype)
    return x, w, b, grad, g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES)
def test_matches_reference_kernels(case, channels_last, dtype, rng, small_chunks, threads, unfold):
    x, w, b, grad, g = _arrays(case, dtype, rng, channels_last)
    out = CF.nhwc_forward(x, w, b, g)
    assert out.shape == g.out_shape and out.dtype == dtype
    assert CF.is_channels_last(out)
    np.testing.assert_allclose(out, K.reference_forward(x, w, b, g), **TOL[dtype])
    dx = CF.nhwc_backward_input(grad, w, g)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_allclose(dx, K.reference_backward_input(grad, w, g), **TOL[dtype])
    dw = CF.nhwc_backward_weight(grad, x, g)
    assert dw.shape == w.shape and dw.dtype == dtype and dw.flags.c_contiguous
    ref_dw = K.reference_backward_weight(grad, x, g)
    np.testing.assert_allclose(dw, ref_dw, rtol=TOL[dtype]["rtol"] * 10,
                               atol=TOL[dtype]["atol"] * max(1.0, float(np.abs(ref_dw).max())))


def test_matches_naive_loops_without_chunking(rng):
    # the default chunk size (whole small batches) against a literal loop
    x, w, b, grad, g = _arrays((2, 3, 6, 5, 4, 3, 3, 2, 1), np.float64, rng)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    naive = np.empty(g.out_shape)
    for n in range(g.N):
        for o in range(g.C_out):
            for p in range(g.OH):
                for q in range(g.OW):
                    naive[n, o, p, q] = b[o] + np.sum(w[o] * xp[n, :, 2 * p:2 * p + 3, 2 * q:2 * q + 3])
    np.testing.assert_allclose(CF.nhwc_forward(x, w, b, g), naive, rtol=1e-12, atol=1e-12)


def test_buffers_of_equal_shape_but_other_padding_do_not_leak(rng):
    # (H=6, P=1) and (H=4, P=2) both pad to 8x8; the zero border must belong to each
    for H, P in ((6, 1), (4, 2), (6, 1)):
        x, w, b, grad, g = _arrays((2, 3, H, H, 2, 3, 3, 1, P), np.float64, rng)
        np.testing.assert_allclose(CF.nhwc_forward(x, w, None, g), K.reference_forward(x, w, None, g),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(CF.nhwc_backward_weight(grad, x, g), K.reference_backward_weight(grad, x, g),
                                   rtol=1e-12, atol=1e-12)


def test_non_finite_weight_gives_the_reference_nan_pattern(rng):
    x, w, b, grad, g = _arrays((2, 2, 6, 6, 3, 3, 3, 1, 0), np.float64, rng)
    w[0, 0, 0, 1] = np.nan
    w[1, 1, 2, 2] = np.inf
    dx, ref = CF.nhwc_backward_input(grad, w, g), K.reference_backward_input(grad, w, g)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(ref))
    finite = ~np.isnan(ref)
    np.testing.assert_allclose(dx[finite], ref[finite], rtol=1e-12, atol=1e-12)


def test_auto_selects_nhwc_on_cpu_for_ungrouped_convolutions():
    g = K.conv_geometry((2, 4, 8, 8), (4, 4, 3, 3), 1, 1)
    assert "nhwc" in K.available_conv_algorithms()
    assert K.select_conv_algorithm(g, "cpu", "auto").name == "nhwc"
    assert K.select_conv_algorithm(g, "cpu", "reference").name == "reference"
    grouped = K.conv_geometry((2, 4, 8, 8), (4, 2, 3, 3), 1, 1, groups=2)
    assert K.select_conv_algorithm(grouped, "cpu", "auto").name == "reference"
    assert not CF.nhwc_supported(g, "cuda:0")


def test_reference_can_be_forced_for_the_op(rng):
    x = mr.tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32))
    w = mr.tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    with K.conv_algorithm("reference"):
        ref = F.conv2d(x, w, padding=1).numpy()
        assert not CF.is_channels_last(ref)
    with K.conv_algorithm("nhwc"):
        fast = F.conv2d(x, w, padding=1).numpy()
    np.testing.assert_allclose(fast, ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[4]])
def test_gradcheck_float64(case, rng, small_chunks, unfold):
    N, C, H, W, C_out, KH, KW, stride, padding = case
    x = mr.tensor(rng.standard_normal((N, C, H, W)), requires_grad=True)
    w = mr.tensor(rng.standard_normal((C_out, C, KH, KW)), requires_grad=True)
    b = mr.tensor(rng.standard_normal(C_out), requires_grad=True)
    with K.conv_algorithm("nhwc"):
        assert mr.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride, padding), [x, w, b])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[4], CASES[5]])
def test_torch_parity(case, dtype, rng, threads):
    torch = pytest.importorskip("torch")
    N, C, H, W, C_out, KH, KW, stride, padding = case
    x = rng.standard_normal((N, C, H, W))
    w, b = rng.standard_normal((C_out, C, KH, KW)), rng.standard_normal(C_out)
    with K.conv_algorithm("nhwc"):
        assert_torch_parity(F.conv2d, torch.nn.functional.conv2d, [x, w, b], dtype=dtype,
                            stride=stride, padding=padding)


def test_resnet_layer_shapes_float32_against_reference(rng, unfold):
    # the ResNet-20 shapes at a small batch, default chunking, against the reference
    for C, C_out, H, stride in ((3, 16, 32, 1), (16, 16, 32, 1), (16, 32, 32, 2), (64, 64, 8, 1)):
        x, w, b, grad, g = _arrays((4, C, H, H, C_out, 3, 3, stride, 1), np.float32, rng)
        np.testing.assert_allclose(CF.nhwc_forward(x, w, None, g), K.reference_forward(x, w, None, g),
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(CF.nhwc_backward_input(grad, w, g), K.reference_backward_input(grad, w, g),
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(CF.nhwc_backward_weight(grad, x, g), K.reference_backward_weight(grad, x, g),
                                   rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("M, K, N", [(1000, 144, 16), (300, 288, 32), (77, 576, 64), (5, 27, 16), (4096, 27, 16)])
def test_blocked_products_equal_plain_ones(M, K, N, rng):
    a = rng.standard_normal((M, K))
    b = rng.standard_normal((K, N))
    out = np.empty((M, N))
    np.testing.assert_allclose(CF.matmul_rows(a, b, out), a @ b, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal((M, N))
    acc = np.ones((K, N))
    CF.add_matmul_tn(a, g, acc)
    np.testing.assert_allclose(acc, 1 + a.T @ g, rtol=1e-12, atol=1e-11)
    assert CF._row_block(K, N) * K * N <= max(CF._SMALL_GEMM_MNK, 16 * K * N)


@pytest.mark.parametrize("KW", [1, 2, 3, 5])
@pytest.mark.parametrize("SW", [1, 2])
def test_row_unfold_equals_naive_for_every_width_and_padding(KW, SW, rng):
    # every input width (narrower than the kernel too) and padding 0 .. KW: the stride-1
    # interior copy, the border columns and the strided path against the definition
    C, KH, H, n = 3, 3, 4, 2
    for W in range(1, 9):
        for PW in range(0, KW + 1):
            if (W + 2 * PW - KW) < 0:
                continue
            xh = rng.standard_normal((n, H, W, C)).astype(np.float32)
            g = K.conv_geometry((n, C, H, W), (5, C, KH, KW), (1, SW), (1, PW))
            CF.clear_buffers()
            rows = CF._unfold_rows_chunk(xh, 0, n, g, C, n).reshape(n, H + 2, g.OW, KW, C)
            padded = np.zeros((n, H + 2, W + 2 * PW, C), np.float32)
            padded[:, 1:1 + H, PW:PW + W] = xh
            for q in range(g.OW):
                for j in range(KW):
                    np.testing.assert_array_equal(rows[:, :, q, j, :], padded[:, :, q * SW + j, :],
                                                  err_msg=f"W={W} PW={PW} q={q} j={j}")
