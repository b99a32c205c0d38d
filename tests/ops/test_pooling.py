"""max_pool2d / avg_pool2d / adaptive_avg_pool2d: gradcheck, PyTorch parity grids, bad input."""

import itertools

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from tests.torch_parity import assert_torch_parity

# every (kernel, stride, padding) with padding <= kernel / 2 (PyTorch's rule)
GRID = [(k, s, p) for k, s, p in itertools.product([1, 2, 3, 5, 7], [None, 1, 2, 3], [0, 1, 2, 3])
        if 2 * p <= k]
# non-square windows as pairs
PAIRS = [((3, 2), (2, 1), (1, 0)), ((1, 4), (1, 3), (0, 2)), ((5, 3), (3, 2), (2, 1)), ((2, 2), (1, 2), (1, 1))]
DTYPES = [np.float32, np.float64]


def _torch():
    return pytest.importorskip("torch")


# --- gradcheck (float64 central differences) ---------------------------------------------

@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 1))])
def test_pooling_gradcheck(rng, kernel, stride, padding):
    # distinct values keep the max away from ties, where it is not differentiable
    x = mr.tensor(rng.permutation(2 * 2 * 5 * 6).reshape(2, 2, 5, 6) / 7.0, requires_grad=True)
    mr.gradcheck(lambda a: F.max_pool2d(a, kernel, stride, padding), [x])
    mr.gradcheck(lambda a: F.avg_pool2d(a, kernel, stride, padding), [x])


@pytest.mark.parametrize("output_size", [1, (2, 3), (4, 4), (None, 2)])
def test_adaptive_avg_pool_gradcheck(rng, output_size):
    x = mr.tensor(rng.standard_normal((2, 2, 5, 6)), requires_grad=True)
    mr.gradcheck(lambda a: F.adaptive_avg_pool2d(a, output_size), [x])


# --- PyTorch parity -----------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding", GRID)
def test_max_pool_parity_grid(rng, dtype, kernel, stride, padding):
    torch = _torch()
    x = rng.standard_normal((2, 3, 11, 9))
    assert_torch_parity(F.max_pool2d, torch.nn.functional.max_pool2d, [x], dtype=dtype,
                        kernel_size=kernel, stride=stride, padding=padding)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding", GRID)
def test_avg_pool_parity_grid(rng, dtype, kernel, stride, padding):
    torch = _torch()
    x = rng.standard_normal((2, 3, 11, 9))
    assert_torch_parity(F.avg_pool2d, torch.nn.functional.avg_pool2d, [x], dtype=dtype,
                        kernel_size=kernel, stride=stride, padding=padding)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding", PAIRS)
@pytest.mark.parametrize("shape", [(1, 1, 7, 5), (3, 2, 6, 10), (2, 6, 9)])
def test_pooling_parity_pairs_batch1_unbatched(rng, dtype, kernel, stride, padding, shape):
    torch = _torch()
    x = rng.standard_normal(shape)
    for mine, ref in [(F.max_pool2d, torch.nn.functional.max_pool2d),
                      (F.avg_pool2d, torch.nn.functional.avg_pool2d)]:
        assert_torch_parity(mine, ref, [x], dtype=dtype, kernel_size=kernel, stride=stride, padding=padding)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_ties_nan_and_neg_inf_match_torch(rng, dtype):
    torch = _torch()
    x = rng.integers(0, 2, size=(2, 2, 7, 8)).astype(np.float64)  # many ties
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 2:5, 2:5] = np.nan
    x[1, 0, :4, :4] = -np.inf
    for kernel, stride, padding in [(2, 2, 0), (3, 1, 1), (3, 2, 1), (4, 3, 2)]:
        assert_torch_parity(F.max_pool2d, torch.nn.functional.max_pool2d, [x], dtype=dtype,
                            kernel_size=kernel, stride=stride, padding=padding)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_and_adaptive_propagate_nan(rng, dtype):
    torch = _torch()
    x = rng.standard_normal((1, 2, 6, 6))
    x[0, 0, 2, 3] = np.nan
    assert_torch_parity(F.avg_pool2d, torch.nn.functional.avg_pool2d, [x], dtype=dtype, kernel_size=3,
                        stride=2, padding=1)
    assert_torch_parity(F.adaptive_avg_pool2d, torch.nn.functional.adaptive_avg_pool2d, [x], dtype=dtype,
                        output_size=(4, 3))


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, output_size", [
    ((2, 3, 8, 8), 1), ((1, 3, 7, 7), 1), ((2, 3, 8, 6), (4, 3)), ((2, 2, 7, 5), (3, 2)),
    ((2, 2, 5, 7), (4, 4)), ((1, 2, 3, 2), (5, 7)), ((2, 4, 9), (2, None)), ((2, 2, 6, 9), (None, 4)),
])
def test_adaptive_avg_pool_parity(rng, dtype, shape, output_size):
    torch = _torch()
    x = rng.standard_normal(shape)
    assert_torch_parity(F.adaptive_avg_pool2d, torch.nn.functional.adaptive_avg_pool2d, [x], dtype=dtype,
                        output_size=output_size)


def test_overlapping_max_windows_accumulate_gradient():
    x = mr.tensor(np.array([[[[0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.0]]]]), requires_grad=True)
    F.max_pool2d(x, 2, stride=1).sum().backward()
    assert x.grad[0, 0, 1, 1] == 4.0  # the centre is the max of all four windows
    assert x.grad.sum() == 4.0


def test_pooling_keeps_dtype_and_shape():
    x = mr.randn(2, 3, 9, 7)
    assert F.max_pool2d(x, 3, 2, 1).shape == (2, 3, 5, 4)
    assert F.avg_pool2d(x, 2).shape == (2, 3, 4, 3)
    assert F.adaptive_avg_pool2d(x, 1).shape == (2, 3, 1, 1)
    assert F.max_pool2d(x, 3).dtype == np.float32
    assert F.max_pool2d(mr.randn(3, 9, 7), 2).shape == (3, 4, 3)


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [F.max_pool2d, F.avg_pool2d])
def test_pooling_rejects_bad_input(fn):
    x = mr.randn(2, 3, 5, 5)
    with pytest.raises(ValueError, match=r"3-d .* or 4-d .* got shape \(3, 5\)"):
        fn(mr.randn(3, 5), 2)
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 2, 3, 3\)"):
        fn(mr.randn(1, 1, 2, 3, 3), 2)
    with pytest.raises(ValueError, match=r"larger than the padded input"):
        fn(x, 7)
    with pytest.raises(ValueError, match=r"larger than the padded input"):
        fn(x, (6, 2), padding=0)
    with pytest.raises(ValueError, match=r"at most half of the kernel size.*padding=\(2, 2\).*\(3, 3\)"):
        fn(x, 3, padding=2)
    with pytest.raises(ValueError, match=r"kernel_size must be >= 1, got 0"):
        fn(x, 0)
    with pytest.raises(ValueError, match=r"stride must be >= 1"):
        fn(x, 2, stride=0)
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        fn(x, 2, padding=-1)
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a pair of ints, got 2.5"):
        fn(x, 2.5)
    with pytest.raises(TypeError, match=r"floating-point input, got dtype int64"):
        fn(mr.tensor(np.zeros((1, 1, 4, 4), dtype=np.int64)), 2)
    with pytest.raises(TypeError, match=r"expected a Tensor input, got ndarray"):
        fn(np.zeros((1, 1, 4, 4)), 2)


def test_adaptive_avg_pool_rejects_bad_input():
    with pytest.raises(ValueError, match=r"output_size must be >= 1, got \(0, 2\)"):
        F.adaptive_avg_pool2d(mr.randn(1, 1, 4, 4), (0, 2))
    with pytest.raises(TypeError, match=r"output_size must be an int or a pair"):
        F.adaptive_avg_pool2d(mr.randn(1, 1, 4, 4), "big")
    with pytest.raises(ValueError, match=r"got shape \(4, 4\)"):
        F.adaptive_avg_pool2d(mr.randn(4, 4), 1)
    with pytest.raises(ValueError, match=r"non-empty"):
        F.adaptive_avg_pool2d(mr.zeros(1, 1, 0, 4), 1)


# --- GPU ----------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (5, 1, 2), ((3, 2), (1, 2), (1, 1))])
def test_pooling_parity_on_gpu(rng, dtype, kernel, stride, padding):
    torch = _torch()
    x = rng.standard_normal((2, 3, 11, 9))
    for mine, ref in [(F.max_pool2d, torch.nn.functional.max_pool2d),
                      (F.avg_pool2d, torch.nn.functional.avg_pool2d)]:
        assert_torch_parity(mine, ref, [x], dtype=dtype, device="cuda", kernel_size=kernel, stride=stride,
                            padding=padding)
    assert_torch_parity(F.adaptive_avg_pool2d, torch.nn.functional.adaptive_avg_pool2d, [x], dtype=dtype,
                        device="cuda", output_size=(4, 3))


@pytest.mark.gpu
def test_pooling_stays_on_gpu_and_3d_input_works():
    x = mr.randn(3, 8, 7, device="cuda", requires_grad=True)
    out = F.max_pool2d(x, 3, 2, 1)
    assert out.device == "cuda:0" and out.shape == (3, 4, 4)
    (out.sum() + F.avg_pool2d(x, 2).sum() + F.adaptive_avg_pool2d(x, (3, 2)).sum()).backward()
    assert mr.backend.array_device(x.grad) == "cuda:0"
