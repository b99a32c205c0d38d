"""relu / sigmoid ops: gradcheck, PyTorch parity (NaN included), bad input."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from tests.torch_parity import assert_torch_parity

DTYPES = [np.float32, np.float64]


def _torch():
    return pytest.importorskip("torch")


def test_activation_gradcheck(rng):
    # keep away from 0, where relu has a kink
    values = rng.standard_normal((3, 4))
    values[np.abs(values) < 0.1] = 0.5
    x = mr.tensor(values, requires_grad=True)
    mr.gradcheck(F.relu, [x])
    mr.gradcheck(F.sigmoid, [mr.tensor(rng.standard_normal((3, 4)) * 3, requires_grad=True)])


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (2, 3, 4, 5), ()])
def test_activation_parity(rng, dtype, shape):
    torch = _torch()
    x = np.asarray(rng.standard_normal(shape) * 4)
    assert_torch_parity(F.relu, torch.relu, [x], dtype=dtype)
    assert_torch_parity(F.sigmoid, torch.sigmoid, [x], dtype=dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_nan_and_extremes_match_torch(dtype):
    torch = _torch()
    x = np.array([[np.nan, 0.0, -0.0, 1.0, -1.0], [np.inf, -np.inf, 80.0, -80.0, 1e-3]])
    assert_torch_parity(F.relu, torch.relu, [x], dtype=dtype)
    assert_torch_parity(F.sigmoid, torch.sigmoid, [x], dtype=dtype)


def test_relu_gradient_is_zero_at_zero_and_passes_nan():
    x = mr.tensor(np.array([-1.0, 0.0, 2.0, np.nan]), requires_grad=True)
    F.relu(x).backward(np.ones(4))
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 1.0, 1.0])


def test_tensor_methods_use_the_ops():
    x = mr.tensor([-1.0, 2.0])
    np.testing.assert_array_equal(x.relu().numpy(), [0.0, 2.0])
    np.testing.assert_allclose(x.sigmoid().numpy(), 1 / (1 + np.exp([1.0, -2.0])), rtol=1e-6)


@pytest.mark.parametrize("fn", [F.relu, F.sigmoid])
def test_activation_rejects_bad_input(fn):
    with pytest.raises(TypeError, match=r"expected a Tensor, got ndarray"):
        fn(np.zeros(3))
    with pytest.raises(TypeError, match=r"floating-point tensor, got dtype int64"):
        fn(mr.tensor(np.arange(3)))


@pytest.mark.gpu
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_parity_on_gpu(rng, dtype):
    torch = _torch()
    x = rng.standard_normal((3, 50)) * 4
    x[0, 0] = np.nan
    assert_torch_parity(F.relu, torch.relu, [x], dtype=dtype, device="cuda")
    assert_torch_parity(F.sigmoid, torch.sigmoid, [x], dtype=dtype, device="cuda")
