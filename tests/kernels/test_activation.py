"""ReLU / sigmoid kernels against plain-Python references; GPU twins against the CPU kernels."""

import math

import numpy as np
import pytest

from minires import backend
from minires.kernels import activation as K


def _special_values(dtype):
    return np.array([-np.inf, -1e4, -30.0, -2.5, -0.0, 0.0, 1e-30, 0.7, 30.0, 1e4, np.inf, np.nan], dtype=dtype)


def reference_sigmoid(v: float) -> float:
    if math.isnan(v):
        return math.nan
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_forward_backward_reference(rng, dtype):
    x = np.concatenate([_special_values(dtype), rng.standard_normal(20).astype(dtype)])
    out = K.relu_forward(x)
    expected = np.array([v if (v > 0 or math.isnan(v)) else 0.0 for v in x.tolist()], dtype=dtype)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == dtype
    grad = rng.standard_normal(x.shape).astype(dtype)
    grad[5] = np.nan  # a NaN gradient at a masked position (x == 0) becomes 0, as in PyTorch
    got = K.relu_backward(grad, out)
    expected = np.array([0.0 if v <= 0 else g for v, g in zip(x.tolist(), grad.tolist())], dtype=dtype)
    np.testing.assert_array_equal(got, expected)
    assert got[-1 - 20] == grad[-1 - 20]  # NaN input passes its gradient


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_forward_backward_reference(rng, dtype):
    x = np.concatenate([_special_values(dtype), rng.standard_normal(20).astype(dtype) * 5])
    out = K.sigmoid_forward(x)
    expected = np.array([reference_sigmoid(v) for v in x.tolist()], dtype=dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=0)  # relative, even for tiny values
    grad = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_allclose(K.sigmoid_backward(grad, out), grad * expected * (1 - expected), rtol=rtol * 10,
                               atol=0)


def test_keep_where_matches_np_where(rng):
    for dtype in (np.float32, np.float64):
        values = rng.standard_normal(50).astype(dtype)
        values[:4] = [np.nan, -0.0, np.inf, -np.inf]
        keep = rng.random(50) < 0.5
        keep[:4] = False
        got = K.keep_where_cpu(keep, values)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, np.where(keep, values, dtype(0)))
        assert not np.signbit(got[1])


def test_sigmoid_does_not_overflow():
    with np.errstate(over="raise"):
        out = K.sigmoid_forward(np.array([-1e30, 1e30], dtype=np.float32))
    np.testing.assert_array_equal(out, [0.0, 1.0])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_activations_match_cpu(rng, dtype):
    x = np.concatenate([_special_values(dtype), rng.standard_normal(1000).astype(dtype) * 5]).reshape(4, -1)
    grad = rng.standard_normal(x.shape).astype(dtype)
    xg, gg = backend.to_device(x, "cuda"), backend.to_device(grad, "cuda")
    np.testing.assert_array_equal(backend.as_numpy(K.relu_forward(xg)), K.relu_forward(x))
    np.testing.assert_array_equal(backend.as_numpy(K.relu_backward(gg, K.relu_forward(xg))),
                                  K.relu_backward(grad, K.relu_forward(x)))
    tol = dict(rtol=2e-6, atol=0) if dtype == np.float32 else dict(rtol=1e-14, atol=0)
    out = K.sigmoid_forward(x)
    out_g = K.sigmoid_forward(xg)
    np.testing.assert_allclose(backend.as_numpy(out_g), out, **tol)
    # the same saved output on both sides: (1 - out) amplifies one-ulp forward differences
    np.testing.assert_allclose(backend.as_numpy(K.sigmoid_backward(gg, backend.to_device(out, "cuda"))),
                               K.sigmoid_backward(grad, out), **tol)
