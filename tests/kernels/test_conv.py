"""Convolution kernels: naive loop references for forward and all gradients, the algorithm
switch, geometry validation, and the GPU path against the CPU one."""

import numpy as np
import pytest

from minires import backend
from minires.kernels import conv as K
from minires.kernels.conv import (ConvAlgorithm, conv2d_backward_bias, conv2d_backward_input,
                                  conv2d_backward_weight, conv2d_forward, conv_geometry)


def naive_conv2d(x, w, b, stride, padding, groups):
    """Loops over every output element, straight from the definition (tiny shapes only)."""
    N, C, H, W = x.shape
    C_out, Cg, KH, KW = w.shape
    (SH, SW), (PH, PW) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    Og = C_out // groups
    out = np.zeros((N, C_out, OH, OW), dtype=x.dtype)
    for n in range(N):
        for o in range(C_out):
            c0 = (o // Og) * Cg
            for p in range(OH):
                for q in range(OW):
                    total = 0.0 if b is None else b[o]
                    for c in range(Cg):
                        for i in range(KH):
                            for j in range(KW):
                                total += w[o, c, i, j] * xp[n, c0 + c, p * SH + i, q * SW + j]
                    out[n, o, p, q] = total
    return out


def naive_conv2d_grads(x, w, grad, stride, padding, groups):
    """Loop reference of dx and dw: every product w*x in the forward sends grad to both."""
    N, C, H, W = x.shape
    C_out, Cg, KH, KW = w.shape
    (SH, SW), (PH, PW) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    Og = C_out // groups
    for n in range(N):
        for o in range(C_out):
            c0 = (o // Og) * Cg
            for p in range(grad.shape[2]):
                for q in range(grad.shape[3]):
                    g = grad[n, o, p, q]
                    for c in range(Cg):
                        for i in range(KH):
                            for j in range(KW):
                                dxp[n, c0 + c, p * SH + i, q * SW + j] += g * w[o, c, i, j]
                                dw[o, c, i, j] += g * xp[n, c0 + c, p * SH + i, q * SW + j]
    return dxp[:, :, PH:PH + H, PW:PW + W], dw


# (N, C, H, W, C_out, KH, KW, stride, padding, groups)
CONFIGS = [
    (1, 1, 5, 5, 1, 3, 3, (1, 1), (0, 0), 1),
    (2, 3, 6, 5, 4, 3, 3, (1, 1), (1, 1), 1),
    (2, 4, 7, 6, 6, 3, 3, (2, 2), (1, 1), 2),
    (1, 4, 5, 7, 4, 3, 3, (1, 2), (1, 0), 4),     # depthwise, asymmetric stride/padding
    (2, 2, 6, 6, 4, 3, 3, (1, 1), (1, 1), 2),     # depthwise with channel multiplier 2
    (2, 3, 7, 7, 2, 1, 1, (3, 3), (0, 0), 1),     # 1x1, stride 3
    (1, 2, 9, 8, 3, 5, 5, (2, 3), (2, 3), 1),
    (1, 1, 7, 7, 2, 7, 7, (1, 1), (3, 3), 1),
    (2, 2, 5, 6, 2, 2, 4, (2, 1), (0, 2), 1),     # even, non-square kernel
    (1, 3, 3, 3, 3, 5, 5, (3, 3), (1, 1), 3),     # kernel larger than the unpadded input
]
IDS = [f"N{c[0]}C{c[1]}H{c[2]}W{c[3]}O{c[4]}_k{c[5]}x{c[6]}_s{c[7]}_p{c[8]}_g{c[9]}" for c in CONFIGS]


def _draw(config, rng, bias=True):
    N, C, H, W, C_out, KH, KW, stride, padding, groups = config
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((C_out, C // groups, KH, KW))
    b = rng.standard_normal(C_out) if bias else None
    return x, w, b, stride, padding, groups


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_forward_matches_naive_loops(config, rng):
    x, w, b, stride, padding, groups = _draw(config, rng)
    out = conv2d_forward(x, w, b, stride, padding, groups, algorithm="reference")
    np.testing.assert_allclose(out, naive_conv2d(x, w, b, stride, padding, groups), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradients_match_naive_loops(config, rng):
    x, w, b, stride, padding, groups = _draw(config, rng)
    out = conv2d_forward(x, w, b, stride, padding, groups, algorithm="reference")
    grad = rng.standard_normal(out.shape)
    dx_ref, dw_ref = naive_conv2d_grads(x, w, grad, stride, padding, groups)
    dx = conv2d_backward_input(grad, w, x.shape, stride, padding, groups, algorithm="reference")
    dw = conv2d_backward_weight(grad, x, w.shape, stride, padding, groups, algorithm="reference")
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv2d_backward_bias(grad), grad.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_int_options_equal_pairs(rng):
    x, w, b, *_ = _draw(CONFIGS[2], rng)
    np.testing.assert_array_equal(conv2d_forward(x, w, b, 2, 1, 2), conv2d_forward(x, w, b, (2, 2), (1, 1), 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    x, w, b, stride, padding, groups = _draw(CONFIGS[3], rng)
    x, w, b = x.astype(dtype), w.astype(dtype), b.astype(dtype)
    out = conv2d_forward(x, w, b, stride, padding, groups)
    assert out.dtype == dtype
    grad = np.ones_like(out)
    assert conv2d_backward_input(grad, w, x.shape, stride, padding, groups).dtype == dtype
    assert conv2d_backward_weight(grad, x, w.shape, stride, padding, groups).dtype == dtype


def test_empty_batch(rng):
    x = np.zeros((0, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    out = conv2d_forward(x, w, None, 1, 1, 1)
    assert out.shape == (0, 3, 5, 5)
    assert conv2d_backward_input(out, w, x.shape, 1, 1, 1).shape == x.shape
    np.testing.assert_array_equal(conv2d_backward_weight(out, x, w.shape, 1, 1, 1), np.zeros_like(w))


# --- geometry and validation --------------------------------------------------------------

def test_geometry_sizes():
    g = conv_geometry((2, 4, 9, 8), (6, 2, 3, 5), stride=(2, 3), padding=(1, 2), groups=2)
    assert (g.OH, g.OW) == (5, 3)
    assert g.out_shape == (2, 6, 5, 3)
    assert g.w_shape == (6, 2, 3, 5)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(x_shape=(4, 9, 8), w_shape=(6, 4, 3, 3)), ValueError, ["rank 4", "rank 3"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 4, 3)), ValueError, ["rank 4", "rank 3"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 3, 3, 3)), ValueError, ["3 channels", "4 channels"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(8, 2, 3, 3), groups=4), ValueError, ["8 channels", "4 channels"]),
    (dict(x_shape=(2, 6, 9, 8), w_shape=(6, 2, 3, 3), groups=4), ValueError, ["(6)", "groups (4)"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 1, 3, 3), groups=4), ValueError, ["(6", "groups (4)"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 4, 3, 3), bias_shape=(4,)), ValueError, ["(6,)", "(4,)"]),
    (dict(x_shape=(2, 4, 4, 8), w_shape=(6, 4, 7, 3), padding=1), ValueError, ["(7, 3)", "(6, 10)"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 4, 3, 3), stride=0), ValueError, ["positive", "0"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 4, 3, 3), stride=(1, -2)), ValueError, ["positive", "-2"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 4, 3, 3), padding=-1), ValueError, ["non-negative", "-1"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 4, 3, 3), stride=1.5), TypeError, ["stride", "1.5"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 4, 3, 3), padding=(1, 1, 1)), ValueError, ["pair", "(1, 1, 1)"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 4, 3, 3), groups=0), ValueError, ["groups", "0"]),
    (dict(x_shape=(2, 4, 9, 8), w_shape=(6, 4, 3, 3), groups=2.0), TypeError, ["groups", "2.0"]),
])
def test_geometry_errors_say_expected_and_given(kwargs, error, words):
    with pytest.raises(error) as info:
        conv_geometry(**kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_numpy_integer_options_are_accepted():
    g = conv_geometry((1, 2, 5, 5), (2, 1, 3, 3), stride=np.int64(2), padding=(np.int32(1), 0), groups=np.int64(2))
    assert (g.SH, g.PH, g.PW, g.groups) == (2, 1, 0, 2)


# --- the algorithm switch -------------------------------------------------------------------

@pytest.fixture
def restore_algorithms():
    family = K.CONV2D
    saved = (dict(family.implementations), list(family.auto_order), K.get_conv_algorithm())
    yield
    family.implementations.clear()
    family.implementations.update(saved[0])
    family.auto_order[:] = saved[1]
    K.set_conv_algorithm(saved[2])


def test_reference_is_always_available():
    assert "reference" in K.available_conv_algorithms()
    assert K.available_conv_algorithms()[0] == "auto"


def test_unknown_algorithm_is_refused(restore_algorithms):
    with pytest.raises(ValueError, match="unknown algorithm 'fastest'.*reference"):
        K.set_conv_algorithm("fastest")
    with pytest.raises(ValueError, match="unknown algorithm"):
        conv2d_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), algorithm="nope")
    with pytest.raises(ValueError, match="reserved"):
        K.register_conv_algorithm(ConvAlgorithm("auto", None, None, None))


def test_auto_prefers_a_registered_algorithm_that_supports_the_problem(restore_algorithms, rng):
    calls = []

    def forward(x, w, b, g, workspace):
        calls.append("forward")
        workspace["cols"] = "kept"
        return K.reference_forward(x, w, b, g, workspace)

    def backward_input(grad, w, g, workspace):
        calls.append(("input", workspace["cols"]))
        return K.reference_backward_input(grad, w, g, workspace)

    def backward_weight(grad, x, g, workspace):
        calls.append(("weight", workspace["cols"]))
        return K.reference_backward_weight(grad, x, g, workspace)

    K.register_conv_algorithm(ConvAlgorithm("test_only", forward, backward_input, backward_weight,
                                            supports=lambda g, device: g.groups == 1))
    x, w, b, stride, padding, groups = _draw(CONFIGS[1], rng)
    workspace = {}
    out = conv2d_forward(x, w, b, stride, padding, groups, workspace=workspace)
    assert workspace["algorithm"] == "test_only"
    # the backward functions follow the forward's choice through the workspace
    conv2d_backward_input(out, w, x.shape, stride, padding, groups, workspace=workspace)
    conv2d_backward_weight(out, x, w.shape, stride, padding, groups, workspace=workspace)
    assert calls == ["forward", ("input", "kept"), ("weight", "kept")]
    # a grouped problem is not supported by it: auto falls back to the reference
    assert K.select_conv_algorithm(conv_geometry((1, 4, 5, 5), (4, 2, 3, 3), groups=2)).name == "reference"
    # an explicit choice wins over auto
    with K.conv_algorithm("reference"):
        assert K.get_conv_algorithm() == "reference"
        ws = {}
        conv2d_forward(x, w, b, stride, padding, groups, workspace=ws)
        assert ws["algorithm"] == "reference"
    assert K.get_conv_algorithm() == "auto"
    assert calls == ["forward", ("input", "kept"), ("weight", "kept")]


# --- GPU ------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gpu_matches_cpu(config, dtype, rng):
    cp = backend.cupy_module()
    x, w, b, stride, padding, groups = (a.astype(dtype) if isinstance(a, np.ndarray) else a
                                        for a in _draw(config, rng))
    out = conv2d_forward(x, w, b, stride, padding, groups)
    out_gpu = conv2d_forward(cp.asarray(x), cp.asarray(w), cp.asarray(b), stride, padding, groups)
    assert isinstance(out_gpu, cp.ndarray) and out_gpu.dtype == dtype
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cp.asnumpy(out_gpu), out, **tol)
    grad = rng.standard_normal(out.shape).astype(dtype)
    dx = conv2d_backward_input(cp.asarray(grad), cp.asarray(w), x.shape, stride, padding, groups)
    dw = conv2d_backward_weight(cp.asarray(grad), cp.asarray(x), w.shape, stride, padding, groups)
    np.testing.assert_allclose(cp.asnumpy(dx), conv2d_backward_input(grad, w, x.shape, stride, padding, groups), **tol)
    np.testing.assert_allclose(cp.asnumpy(dw), conv2d_backward_weight(grad, x, w.shape, stride, padding, groups), **tol)
    np.testing.assert_allclose(cp.asnumpy(conv2d_backward_bias(cp.asarray(grad))), conv2d_backward_bias(grad), **tol)
