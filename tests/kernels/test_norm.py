"""Batch-norm kernels against a per-channel NumPy reference and finite differences; GPU twins."""

import numpy as np
import pytest

from minires import backend
from minires.kernels import activation as A
from minires.kernels import norm as K

SHAPES = [(6, 3), (4, 3, 5), (2, 3, 4, 5), (1, 2, 3, 3)]


def reference_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """One channel at a time with plain NumPy; returns (out, new_running_mean, new_running_var)."""
    C = x.shape[1]
    out = np.empty_like(x)
    new_mean = None if running_mean is None else running_mean.copy()
    new_var = None if running_var is None else running_var.copy()
    for c in range(C):
        values = x[:, c].ravel()
        if training:
            mean, var = values.mean(), values.var()
            if new_mean is not None:
                new_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean
                new_var[c] = (1 - momentum) * running_var[c] + momentum * values.var(ddof=1)
        else:
            mean, var = running_mean[c], running_var[c]
        w = 1.0 if weight is None else weight[c]
        b = 0.0 if bias is None else bias[c]
        out[:, c] = w * (x[:, c] - mean) / np.sqrt(var + eps) + b
    return out, new_mean, new_var


def numerical_grads(fn, arrays, cotangent, eps=1e-6):
    """Central differences of <fn(*arrays), cotangent> for each array (float64)."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            original = flat[i]
            flat[i] = original + eps
            plus = (fn(*arrays) * cotangent).sum()
            flat[i] = original - eps
            minus = (fn(*arrays) * cotangent).sum()
            flat[i] = original
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_forward_and_running_stats_match_reference(rng, shape, training, affine):
    C = shape[1]
    x = rng.standard_normal(shape) * 2 + 0.5
    weight, bias = (rng.standard_normal(C), rng.standard_normal(C)) if affine else (None, None)
    running_mean, running_var = rng.standard_normal(C), rng.random(C) + 0.5
    ref, ref_mean, ref_var = reference_batch_norm(x, weight, bias, running_mean, running_var, training, 0.3, 1e-5)
    out, x_hat, inv_std, _ = K.batch_norm_forward(
        x, K.BatchNormParams(weight, bias, running_mean, running_var, training, 0.3, 1e-5))
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(running_mean, ref_mean, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(running_var, ref_var, rtol=1e-13, atol=1e-15)
    assert inv_std.shape == (C,) and x_hat.shape == shape


def test_training_without_running_stats_tracks_nothing(rng):
    x = rng.standard_normal((4, 3, 2, 2))
    out = K.batch_norm_forward(x, K.BatchNormParams(None, None, None, None, True, 0.1, 1e-5)).out
    ref, _, _ = reference_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 2), (3, 2, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_backward_matches_finite_differences(rng, shape, training, relu):
    C = shape[1]
    x, weight, bias = rng.standard_normal(shape), rng.standard_normal(C), rng.standard_normal(C)
    running_mean, running_var = rng.standard_normal(C), rng.random(C) + 0.5
    def params(weight, bias):
        return K.BatchNormParams(weight, bias, running_mean.copy(), running_var.copy(), training, 0.1, 1e-5, relu)

    def fn(x, weight, bias):
        return K.batch_norm_forward(x, params(weight, bias)).out

    forward_params = params(weight, bias)
    saved = K.batch_norm_forward(x, forward_params)
    grad = rng.standard_normal(shape)
    got = K.batch_norm_backward(grad, saved, forward_params)
    expected = numerical_grads(fn, [x, weight, bias], grad)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("training", [True, False])
def test_fused_relu_equals_composition(rng, training):
    x = rng.standard_normal((3, 4, 5, 5))
    weight, bias = rng.standard_normal(4), rng.standard_normal(4)
    x[0, 1, 2, 2] = np.nan
    stats = [rng.standard_normal(4), rng.random(4) + 0.5]
    stats_copy = [s.copy() for s in stats]
    fused_params = K.BatchNormParams(weight, bias, *stats, training, 0.1, 1e-5, relu=True)
    plain_params = K.BatchNormParams(weight, bias, *stats_copy, training, 0.1, 1e-5)
    fused_saved = K.batch_norm_forward(x, fused_params)
    plain_saved = K.batch_norm_forward(x, plain_params)
    out, plain = fused_saved.out, plain_saved.out
    np.testing.assert_array_equal(out, A.relu_forward(plain))
    np.testing.assert_array_equal(stats[0], stats_copy[0])
    grad = rng.standard_normal(x.shape)
    fused = K.batch_norm_backward(grad, fused_saved, fused_params)
    composed = K.batch_norm_backward(A.relu_backward(grad, A.relu_forward(plain)), plain_saved, plain_params)
    for f, c in zip(fused[:3], composed[:3]):
        np.testing.assert_allclose(f, c, rtol=1e-12, atol=1e-12)


def test_backward_skips_unrequested_grads(rng):
    x = rng.standard_normal((4, 2))
    params = K.BatchNormParams(None, None, None, None, True)
    saved = K.batch_norm_forward(x, params)
    gx, gw, gb, ga = K.batch_norm_backward(np.ones_like(x), saved, params,
                                           K.GradsNeeded(x=True, weight=False, bias=False))
    assert gw is None and gb is None and ga is None
    np.testing.assert_allclose(gx, 0, atol=1e-12)  # sum of a normalised batch does not depend on x


def test_update_running_stats_rule():
    running_mean, running_var = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    K.update_running_stats(running_mean, running_var, np.array([5.0, 6.0]), np.array([0.5, 1.0]), 5, 0.25)
    np.testing.assert_allclose(running_mean, [0.75 * 1 + 0.25 * 5, 0.75 * 2 + 0.25 * 6])
    np.testing.assert_allclose(running_var, [0.75 * 3 + 0.25 * 0.5 * 5 / 4, 0.75 * 4 + 0.25 * 1.0 * 5 / 4])


# --- GPU twins ----------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 7)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_gpu_batch_norm_matches_cpu(rng, dtype, shape, training, relu, affine):
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    if relu:
        x.reshape(-1)[3] = np.nan  # NaN flows through the fused mask like the CPU kernel
    weight = rng.standard_normal(C).astype(dtype) if affine else None
    bias = rng.standard_normal(C).astype(dtype) if affine else None
    stats = [rng.standard_normal(C).astype(dtype), (rng.random(C) + 0.5).astype(dtype)]
    stats_g = [backend.to_device(s, "cuda") for s in stats]

    def gpu(a):
        return None if a is None else backend.to_device(a, "cuda")

    params = K.BatchNormParams(weight, bias, *stats, training, 0.1, 1e-5, relu)
    params_g = K.BatchNormParams(gpu(weight), gpu(bias), *stats_g, training, 0.1, 1e-5, relu)
    saved, saved_g = K.batch_norm_forward(x, params), K.batch_norm_forward(gpu(x), params_g)
    (out, x_hat, inv_std, _), (out_g, x_hat_g, inv_std_g, _) = saved, saved_g
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(backend.as_numpy(out_g), out, **tol)
    np.testing.assert_allclose(backend.as_numpy(x_hat_g), x_hat, **tol)
    for s, s_g in zip(stats, stats_g):
        np.testing.assert_allclose(backend.as_numpy(s_g), s, **tol)
    grad = rng.standard_normal(shape).astype(dtype)
    got = K.batch_norm_backward(grad, saved, params)[:3]
    got_g = K.batch_norm_backward(gpu(grad), saved_g, params_g)[:3]
    for g, g_g in zip(got, got_g):
        np.testing.assert_allclose(backend.as_numpy(g_g), g, **tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_gpu_batch_norm_add_relu_matches_cpu(rng, dtype, training):
    # relu(bn(x) + addend): on CuPy composed of the plain kernel, an addition and the ReLU kernel
    shape, C = (4, 3, 5, 7), 3
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    addend = rng.standard_normal(shape).astype(dtype)
    weight, bias = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    stats = [rng.standard_normal(C).astype(dtype), (rng.random(C) + 0.5).astype(dtype)]
    stats_g = [backend.to_device(s, "cuda") for s in stats]

    def gpu(a):
        return backend.to_device(a, "cuda")

    params = K.BatchNormParams(weight, bias, *stats, training, 0.1, 1e-5, relu=True)
    params_g = K.BatchNormParams(gpu(weight), gpu(bias), *stats_g, training, 0.1, 1e-5, relu=True)
    saved, saved_g = K.batch_norm_forward(x, params, addend), K.batch_norm_forward(gpu(x), params_g, gpu(addend))
    out, out_g = saved.out, saved_g.out
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(backend.as_numpy(out_g), out, **tol)
    for s, s_g in zip(stats, stats_g):
        np.testing.assert_allclose(backend.as_numpy(s_g), s, **tol)
    grad = rng.standard_normal(shape).astype(dtype)
    with_addend = K.GradsNeeded(addend=True)
    got = K.batch_norm_backward(grad, saved, params, with_addend)
    got_g = K.batch_norm_backward(gpu(grad), saved_g, params_g, with_addend)
    assert len(got) == len(got_g) == 4 and got.addend is not None and got_g.addend is not None
    for g, g_g in zip(got, got_g):
        np.testing.assert_allclose(backend.as_numpy(g_g), g, **tol)
