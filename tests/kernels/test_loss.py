"""Softmax / cross-entropy kernels against plain-Python references; GPU twins against the CPU kernels."""

import math

import numpy as np
import pytest

from minires import backend
from minires.kernels import loss as K


def reference_log_softmax_rows(x):
    out = np.empty_like(x)
    for m, row in enumerate(x.tolist()):
        top = max(row)
        lse = top + math.log(sum(math.exp(v - top) for v in row))
        out[m] = [v - lse for v in row]
    return out


def reference_cross_entropy_rows(x, target, eps, ignore_index):
    logp = reference_log_softmax_rows(x)
    C = x.shape[1]
    losses = np.zeros(len(target))
    for m, t in enumerate(target.tolist()):
        if t == ignore_index:
            continue
        losses[m] = (1 - eps) * -logp[m, t] + eps * -sum(logp[m]) / C
    return losses


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e4])
def test_log_softmax_and_softmax_match_reference_and_stay_finite(rng, scale):
    x = rng.standard_normal((5, 7)) * scale
    ref = reference_log_softmax_rows(x)
    np.testing.assert_allclose(K.log_softmax_forward(x, axis=1), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.softmax_forward(x, axis=1), np.exp(ref), rtol=1e-12, atol=1e-300)
    # another axis: the same numbers transposed
    np.testing.assert_allclose(K.log_softmax_forward(x.T.copy(), axis=0), ref.T, rtol=1e-12, atol=1e-12)
    assert np.isfinite(K.log_softmax_forward(x.astype(np.float32), axis=1)).all()


def test_softmax_backward_matches_jacobian(rng):
    x, grad = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    s = K.softmax_forward(x, axis=1)
    expected = np.stack([(np.diag(row) - np.outer(row, row)) @ g for row, g in zip(s, grad)])
    np.testing.assert_allclose(K.softmax_backward(grad, s, axis=1), expected, rtol=1e-12, atol=1e-14)
    logp = K.log_softmax_forward(x, axis=1)
    expected = np.stack([(np.eye(4) - np.outer(np.ones(4), row)).T @ g for row, g in zip(s, grad)])
    np.testing.assert_allclose(K.log_softmax_backward(grad, logp, axis=1), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_cross_entropy_rows_match_reference(rng, eps):
    x = rng.standard_normal((6, 5)) * 3
    target = rng.integers(0, 5, 6)
    target[2] = -100
    losses, logp = K.cross_entropy_rows(x, target, eps, -100)
    np.testing.assert_allclose(losses, reference_cross_entropy_rows(x, target, eps, -100), rtol=1e-12, atol=1e-12)
    # fused gradient == softmax - smoothed one-hot, row-scaled; ignored rows get zero
    scale = rng.standard_normal(6)
    scale[2] = 0.0
    grad = K.cross_entropy_rows_backward(scale, logp, target, eps, -100)
    q = np.full((6, 5), eps / 5)
    q[np.arange(6), np.where(target == -100, 0, target)] += 1 - eps
    expected = (np.exp(reference_log_softmax_rows(x)) - q) * scale[:, None]
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-14)
    assert np.all(grad[2] == 0)


def test_nll_rows_and_backward(rng):
    logp = rng.standard_normal((4, 3))
    target = np.array([2, -100, 0, 1])
    np.testing.assert_array_equal(K.nll_rows(logp, target), [-logp[0, 2], 0.0, -logp[2, 0], -logp[3, 1]])
    grad = K.nll_rows_backward(np.array([1.0, 0.0, 2.0, 3.0]), target, (4, 3), np.dtype(np.float64))
    expected = np.zeros((4, 3))
    expected[0, 2], expected[2, 0], expected[3, 1] = -1.0, -2.0, -3.0
    np.testing.assert_array_equal(grad, expected)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_gpu_loss_kernels_match_cpu(rng, dtype, eps):
    x = (rng.standard_normal((33, 10)) * 100).astype(dtype)
    target = rng.integers(0, 10, 33)
    target[5] = -100
    scale = rng.standard_normal(33).astype(dtype)
    scale[5] = 0
    xg, tg, sg = (backend.to_device(a, "cuda") for a in (x, target, scale))
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for axis in (0, 1):
        out = K.log_softmax_forward(x, axis)
        out_g = K.log_softmax_forward(xg, axis)
        np.testing.assert_allclose(backend.as_numpy(out_g), out, **tol)
        np.testing.assert_allclose(backend.as_numpy(K.log_softmax_backward(xg, out_g, axis)),
                                   K.log_softmax_backward(x, out, axis), **tol)
        s, s_g = K.softmax_forward(x, axis), K.softmax_forward(xg, axis)
        np.testing.assert_allclose(backend.as_numpy(s_g), s, **tol)
        np.testing.assert_allclose(backend.as_numpy(K.softmax_backward(xg, s_g, axis)),
                                   K.softmax_backward(x, s, axis), **tol)
    losses, logp = K.cross_entropy_rows(x, target, eps, -100)
    losses_g, logp_g = K.cross_entropy_rows(xg, tg, eps, -100)
    np.testing.assert_allclose(backend.as_numpy(losses_g), losses, **tol)
    grad = K.cross_entropy_rows_backward(scale, logp, target, eps, -100)
    grad_g = K.cross_entropy_rows_backward(sg, logp_g, tg, eps, -100)
    np.testing.assert_allclose(backend.as_numpy(grad_g), grad, **tol)
    nll_grad_g = K.nll_rows_backward(sg, tg, (33, 10), np.dtype(dtype))
    np.testing.assert_array_equal(backend.as_numpy(nll_grad_g),
                                  K.nll_rows_backward(scale, target, (33, 10), np.dtype(dtype)))
