"""batch_norm / batch_norm_relu: gradcheck, PyTorch parity (values, grads, running stats), bad input."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from tests.torch_parity import assert_torch_parity

DTYPES = [np.float32, np.float64]
STAT_TOL = {np.float32: dict(rtol=2e-6, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-14)}


def _torch():
    return pytest.importorskip("torch")


# --- gradcheck ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 2)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("fn", [F.batch_norm, F.batch_norm_relu])
def test_batch_norm_gradcheck(rng, shape, training, fn):
    C = shape[1]
    x = mr.tensor(rng.standard_normal(shape), requires_grad=True)
    w = mr.tensor(rng.standard_normal(C), requires_grad=True)
    b = mr.tensor(rng.standard_normal(C), requires_grad=True)
    mean, var = rng.standard_normal(C), rng.random(C) + 0.5
    mr.gradcheck(lambda x, w, b: fn(x, mean.copy(), var.copy(), w, b, training=training), [x, w, b])


def test_batch_norm_gradcheck_without_affine(rng):
    x = mr.tensor(rng.standard_normal((4, 3, 2)), requires_grad=True)
    mr.gradcheck(lambda x: F.batch_norm(x, None, None, training=True), [x])


# --- PyTorch parity -----------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 3), (1, 4, 3, 5), (4, 3, 7, 5), (5, 2, 9), (2, 5, 1, 1)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_parity(rng, dtype, shape, training, affine, relu):
    torch = _torch()
    C = shape[1]
    x = rng.standard_normal(shape) * 3 + 1
    inputs = [x, rng.standard_normal(C), rng.standard_normal(C)] if affine else [x]
    mean = rng.standard_normal(C).astype(dtype)
    var = (rng.random(C) + 0.5).astype(dtype)
    torch_mean, torch_var = torch.tensor(mean.copy()), torch.tensor(var.copy())
    mine = F.batch_norm_relu if relu else F.batch_norm

    def minires_fn(x, w=None, b=None):
        return mine(x, mean, var, w, b, training=training, momentum=0.2, eps=1e-4)

    def torch_fn(x, w=None, b=None):
        out = torch.nn.functional.batch_norm(x, torch_mean, torch_var, w, b, training=training, momentum=0.2,
                                             eps=1e-4)
        return torch.relu(out) if relu else out

    assert_torch_parity(minires_fn, torch_fn, inputs, dtype=dtype)
    np.testing.assert_allclose(mean, torch_mean.numpy(), **STAT_TOL[dtype])
    np.testing.assert_allclose(var, torch_var.numpy(), **STAT_TOL[dtype])


@pytest.mark.torch
@pytest.mark.parametrize("requires_grad", [(False, True, True), (True, False, True), (True, True, False),
                                           (False, False, True)])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_partial_requires_grad(rng, requires_grad, relu):
    torch = _torch()
    x, w, b = rng.standard_normal((4, 3, 2, 3)), rng.standard_normal(3), rng.standard_normal(3)
    mine = F.batch_norm_relu if relu else F.batch_norm

    def torch_fn(x, w, b):
        out = torch.nn.functional.batch_norm(x, None, None, w, b, training=True)
        return torch.relu(out) if relu else out

    _, grads = assert_torch_parity(lambda x, w, b: mine(x, None, None, w, b, training=True), torch_fn, [x, w, b],
                                   dtype=np.float64, requires_grad=list(requires_grad))
    assert [g is not None for g in grads] == list(requires_grad)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_running_stats_follow_torch_over_steps_then_eval(rng, dtype):
    torch = _torch()
    C = 4
    mean, var = mr.zeros(C, dtype=dtype), mr.ones(C, dtype=dtype)  # Tensors, as a layer would keep them
    torch_mean, torch_var = torch.zeros(C, dtype=getattr(torch, np.dtype(dtype).name)), \
        torch.ones(C, dtype=getattr(torch, np.dtype(dtype).name))
    w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    for step in range(5):
        x = (rng.standard_normal((6, C, 3, 3)) * (step + 1) + step).astype(dtype)
        with mr.no_grad():  # running statistics update even without a graph
            F.batch_norm(mr.tensor(x), mean, var, mr.tensor(w), mr.tensor(b), training=True)
        torch.nn.functional.batch_norm(torch.tensor(x), torch_mean, torch_var, torch.tensor(w), torch.tensor(b),
                                       training=True)
        np.testing.assert_allclose(mean.numpy(), torch_mean.numpy(), **STAT_TOL[dtype])
        np.testing.assert_allclose(var.numpy(), torch_var.numpy(), **STAT_TOL[dtype])
    x = rng.standard_normal((3, C, 2, 2))
    assert_torch_parity(lambda x, w, b: F.batch_norm(x, mean, var, w, b),
                        lambda x, w, b: torch.nn.functional.batch_norm(x, torch_mean, torch_var, w, b),
                        [x, w, b], dtype=dtype)


@pytest.mark.torch
@pytest.mark.parametrize("relu", [False, True])
def test_float32_batch_stats_accurate_when_mean_dominates(rng, relu):
    # |mean| / std ~ 1000: a plain float32 mean would shift x_hat by ~1e-4 relative
    torch = _torch()
    x = rng.standard_normal((3, 5, 9, 4)) * 0.065 + 63.0
    mean, var = np.zeros(5, np.float32), np.ones(5, np.float32)
    torch_mean, torch_var = torch.zeros(5), torch.ones(5)
    mine = F.batch_norm_relu if relu else F.batch_norm

    def torch_fn(x):
        out = torch.nn.functional.batch_norm(x, torch_mean, torch_var, training=True)
        return torch.relu(out) if relu else out

    assert_torch_parity(lambda x: mine(x, mean, var, training=True), torch_fn, [x], dtype=np.float32)
    np.testing.assert_allclose(mean, torch_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(var, torch_var.numpy(), rtol=1e-4)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_like_torch(rng, dtype):
    torch = _torch()
    x = rng.standard_normal((4, 3, 2, 2))
    x[1, 0, 1, 1] = np.nan
    for training in (True, False):
        mean, var = np.zeros(3, dtype), np.ones(3, dtype)
        torch_mean, torch_var = torch.tensor(mean.copy()), torch.tensor(var.copy())
        assert_torch_parity(lambda x: F.batch_norm(x, mean, var, training=training),
                            lambda x: torch.nn.functional.batch_norm(x, torch_mean, torch_var, training=training),
                            [x], dtype=dtype)
        np.testing.assert_array_equal(np.isnan(mean), np.isnan(torch_mean.numpy()))


# --- behaviour ----------------------------------------------------------------------------

def test_training_normalises_each_channel(rng):
    x = mr.tensor((rng.standard_normal((16, 3, 4, 4)) * 5 + 2).astype(np.float32))
    out = F.batch_norm(x, None, None, training=True).numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    assert out.dtype == np.float32


def test_running_stats_may_be_arrays_or_tensors(rng):
    x = mr.tensor(rng.standard_normal((4, 2)).astype(np.float32))
    array_mean, array_var = np.zeros(2, np.float32), np.ones(2, np.float32)
    tensor_mean, tensor_var = mr.zeros(2), mr.ones(2)
    F.batch_norm(x, array_mean, array_var, training=True)
    F.batch_norm(x, tensor_mean, tensor_var, training=True)
    np.testing.assert_array_equal(array_mean, tensor_mean.numpy())
    np.testing.assert_array_equal(array_var, tensor_var.numpy())
    assert not np.all(array_mean == 0)


def test_eval_leaves_running_stats_alone(rng):
    mean, var = np.zeros(2), np.ones(2)
    F.batch_norm(mr.tensor(rng.standard_normal((4, 2))), mean, var, training=False)
    np.testing.assert_array_equal(mean, 0)
    np.testing.assert_array_equal(var, 1)


# --- bad input ----------------------------------------------------------------------------

def test_batch_norm_rejects_bad_input():
    x = mr.randn(4, 3, 2, 2)
    stats = (mr.zeros(3), mr.ones(3))
    with pytest.raises(ValueError, match=r"running_mean and running_var must be given when training=False"):
        F.batch_norm(x, None, None)
    with pytest.raises(ValueError, match=r"shape \(N, C\) or \(N, C, \*spatial\), got shape \(3,\)"):
        F.batch_norm(mr.randn(3), *stats, training=True)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\).*got \(4,\)"):
        F.batch_norm(x, mr.zeros(4), mr.ones(3))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\).*got \(2,\)"):
        F.batch_norm(x, *stats, weight=mr.ones(2))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\).*got \(3, 1\)"):
        F.batch_norm(x, *stats, bias=mr.ones(3, 1))
    with pytest.raises(TypeError, match=r"running_var has dtype float64, expected the input's float32"):
        F.batch_norm(x, mr.zeros(3), np.ones(3))
    with pytest.raises(TypeError, match=r"float32 and float64"):
        F.batch_norm(x, *stats, weight=mr.ones(3, dtype=np.float64))
    with pytest.raises(ValueError, match=r"more than 1 value per channel when training.*\(1, 3\)"):
        F.batch_norm(mr.randn(1, 3), *stats, training=True)
    with pytest.raises(TypeError, match=r"momentum must be a real number, got None"):
        F.batch_norm(x, *stats, training=True, momentum=None)
    with pytest.raises(TypeError, match=r"running_mean must be a Tensor, an array or None, got list"):
        F.batch_norm(x, [0, 0, 0], mr.ones(3))
    with pytest.raises(TypeError, match=r"floating-point input, got dtype int64"):
        F.batch_norm(mr.tensor(np.zeros((2, 3), np.int64)), *stats)
    with pytest.raises(TypeError, match=r"training must be a bool"):
        F.batch_norm(x, *stats, training="yes")


# --- GPU ----------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_parity_on_gpu(rng, dtype, training, relu):
    torch = _torch()
    C = 3
    x = rng.standard_normal((4, C, 5, 6)) * 2 + 1
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    mean = mr.tensor(rng.standard_normal(C).astype(dtype), device="cuda")
    var = mr.tensor((rng.random(C) + 0.5).astype(dtype), device="cuda")
    torch_mean, torch_var = torch.tensor(mean.numpy()), torch.tensor(var.numpy())
    mine = F.batch_norm_relu if relu else F.batch_norm

    def torch_fn(x, w, b):
        out = torch.nn.functional.batch_norm(x, torch_mean, torch_var, w, b, training=training)
        return torch.relu(out) if relu else out

    assert_torch_parity(lambda x, w, b: mine(x, mean, var, w, b, training=training), torch_fn, [x, w, b],
                        dtype=dtype, device="cuda")
    np.testing.assert_allclose(mean.numpy(), torch_mean.numpy(), **STAT_TOL[dtype])
    np.testing.assert_allclose(var.numpy(), torch_var.numpy(), **STAT_TOL[dtype])


@pytest.mark.gpu
def test_batch_norm_rejects_statistics_on_another_device():
    x = mr.randn(4, 3, device="cuda")
    with pytest.raises(ValueError, match=r"running_mean is on cpu, the input on cuda:0"):
        F.batch_norm(x, np.zeros(3, np.float32), mr.ones(3, device="cuda"), training=True)
    with pytest.raises(ValueError, match=r"cuda:0 and cpu|cpu and cuda:0"):
        F.batch_norm(x, None, None, weight=mr.ones(3), training=True)
