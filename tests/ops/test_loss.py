"""softmax / log_softmax / nll_loss / cross_entropy: gradcheck, PyTorch parity, stability, bad input."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from tests.torch_parity import assert_torch_parity

DTYPES = [np.float32, np.float64]


def _torch():
    return pytest.importorskip("torch")


def _targets(rng, shape, classes, ignored=True):
    """Integer targets of ``shape`` in ``[0, classes)``, one of them ``-100`` when ``ignored``."""
    target = rng.integers(0, classes, shape)
    if ignored and target.size > 1:
        target.reshape(-1)[1] = -100
    return target


# --- gradcheck ----------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_family_gradcheck(rng, axis):
    x = mr.tensor(rng.standard_normal((3, 4, 2)), requires_grad=True)
    mr.gradcheck(lambda a: F.log_softmax(a, axis), [x])
    mr.gradcheck(lambda a: F.softmax(a, axis), [x])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_gradcheck(rng, label_smoothing, reduction):
    x = mr.tensor(rng.standard_normal((5, 4)), requires_grad=True)
    target = mr.tensor(_targets(rng, (5,), 4))
    mr.gradcheck(lambda a: F.cross_entropy(a, target, label_smoothing, reduction=reduction), [x])
    mr.gradcheck(lambda a: F.nll_loss(F.log_softmax(a, 1), target, reduction=reduction), [x])


def test_cross_entropy_gradcheck_spatial(rng):
    x = mr.tensor(rng.standard_normal((2, 3, 2, 2)), requires_grad=True)
    target = mr.tensor(_targets(rng, (2, 2, 2), 3))
    mr.gradcheck(lambda a: F.cross_entropy(a, target, 0.1), [x])


# --- PyTorch parity -----------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", [((6,), 0), ((4, 5), 1), ((4, 5), 0), ((2, 3, 4), -1), ((2, 3, 4, 2), 1)])
def test_softmax_family_parity(rng, dtype, shape, axis):
    torch = _torch()
    x = rng.standard_normal(shape) * 5
    assert_torch_parity(F.log_softmax, torch.nn.functional.log_softmax, [x], dtype=dtype, dim=axis)
    assert_torch_parity(F.softmax, torch.nn.functional.softmax, [x], dtype=dtype, dim=axis)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 5), (1, 3), (3, 4, 2, 3), (2, 3, 5)])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_parity(rng, dtype, shape, label_smoothing, reduction):
    torch = _torch()
    x = rng.standard_normal(shape) * 3
    target = _targets(rng, (shape[0],) + shape[2:], shape[1])
    assert_torch_parity(F.cross_entropy, torch.nn.functional.cross_entropy, [x, target], dtype=dtype,
                        label_smoothing=label_smoothing, reduction=reduction)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 5), (3, 4, 2, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_parity(rng, dtype, shape, reduction):
    torch = _torch()
    x = rng.standard_normal(shape)
    target = _targets(rng, (shape[0],) + shape[2:], shape[1])
    assert_torch_parity(F.nll_loss, torch.nn.functional.nll_loss, [x, target], dtype=dtype, reduction=reduction)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e3, 3e4])
def test_cross_entropy_stable_for_huge_logits(rng, dtype, scale):
    torch = _torch()
    x = rng.standard_normal((6, 10)) * scale
    target = _targets(rng, (6,), 10, ignored=False)
    out, (grad, _) = assert_torch_parity(F.cross_entropy, torch.nn.functional.cross_entropy, [x, target],
                                         dtype=dtype, label_smoothing=0.1)
    assert np.isfinite(out).all() and np.isfinite(grad).all()
    assert_torch_parity(F.log_softmax, torch.nn.functional.log_softmax, [x], dtype=dtype, dim=1)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_like_torch(rng, dtype):
    torch = _torch()
    x = rng.standard_normal((4, 5))
    x[1, 2] = np.nan
    target = np.array([0, 1, 2, 3])
    for label_smoothing in (0.0, 0.2):
        assert_torch_parity(F.cross_entropy, torch.nn.functional.cross_entropy, [x, target], dtype=dtype,
                            label_smoothing=label_smoothing, reduction="none")
    assert_torch_parity(F.log_softmax, torch.nn.functional.log_softmax, [x], dtype=dtype, dim=1)
    assert_torch_parity(F.softmax, torch.nn.functional.softmax, [x], dtype=dtype, dim=1)


def test_unbatched_cross_entropy_matches_batched(rng):
    x = rng.standard_normal(6)
    single = mr.tensor(x, requires_grad=True)
    batched = mr.tensor(x[None], requires_grad=True)
    loss = F.cross_entropy(single, mr.tensor(np.array(4)), 0.2)
    loss.backward()
    loss_b = F.cross_entropy(batched, mr.tensor(np.array([4])), 0.2)
    loss_b.backward()
    assert loss.shape == () and abs(loss.item() - loss_b.item()) < 1e-12
    np.testing.assert_allclose(single.grad, batched.grad[0], rtol=1e-12)


def test_all_targets_ignored_gives_nan_like_torch(rng):
    loss = F.cross_entropy(mr.tensor(rng.standard_normal((3, 4))), mr.tensor(np.full(3, -100)))
    assert np.isnan(loss.item())


def test_mean_divides_by_rows_not_ignored(rng):
    x = rng.standard_normal((4, 3))
    target = np.array([0, -100, 2, 1])
    loss = F.cross_entropy(mr.tensor(x), mr.tensor(target)).item()
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    assert abs(loss - -(logp[0, 0] + logp[2, 2] + logp[3, 1]) / 3) < 1e-12


# --- bad input ----------------------------------------------------------------------------

def test_losses_reject_bad_input():
    logits = mr.randn(4, 3)
    with pytest.raises(TypeError, match=r"integer class indices .* got dtype float32"):
        F.cross_entropy(logits, mr.zeros(4))
    with pytest.raises(TypeError, match=r"target must be a Tensor of class indices, got list"):
        F.cross_entropy(logits, [0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"target 3 is out of range for 3 classes"):
        F.cross_entropy(logits, mr.tensor(np.array([0, 1, 3, 0])))
    with pytest.raises(ValueError, match=r"target -1 is out of range for 3 classes"):
        F.nll_loss(logits, mr.tensor(np.array([0, -1, 2, 0])))
    with pytest.raises(ValueError, match=r"target shape \(3,\) does not match input shape \(4, 3\).*\(4,\)"):
        F.cross_entropy(logits, mr.tensor(np.array([0, 1, 2])))
    with pytest.raises(ValueError, match=r"target shape \(4, 1\) does not match"):
        F.cross_entropy(logits, mr.tensor(np.zeros((4, 1), np.int64)))
    with pytest.raises(ValueError, match=r"label_smoothing must be between 0.0 and 1.0, got 1.5"):
        F.cross_entropy(logits, mr.tensor(np.zeros(4, np.int64)), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        F.cross_entropy(logits, mr.tensor(np.zeros(4, np.int64)), reduction="avg")
    with pytest.raises(TypeError, match=r"floating-point logits, got dtype int64"):
        F.cross_entropy(mr.tensor(np.zeros((4, 3), np.int64)), mr.tensor(np.zeros(4, np.int64)))
    with pytest.raises(ValueError, match=r"axis 2 is out of range for a tensor of shape \(4, 3\)"):
        F.log_softmax(logits, 2)
    with pytest.raises(ValueError, match=r"rank >= 1"):
        F.softmax(mr.tensor(1.0))
    with pytest.raises(TypeError, match=r"expected a Tensor input, got ndarray"):
        F.softmax(np.zeros(3))


# --- GPU ----------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 10), (3, 4, 2, 3)])
def test_loss_parity_on_gpu(rng, dtype, shape):
    torch = _torch()
    x = rng.standard_normal(shape) * 50
    target = _targets(rng, (shape[0],) + shape[2:], shape[1])
    for reduction in ("mean", "none"):
        assert_torch_parity(F.cross_entropy, torch.nn.functional.cross_entropy, [x, target], dtype=dtype,
                            device="cuda", label_smoothing=0.1, reduction=reduction)
        assert_torch_parity(F.nll_loss, torch.nn.functional.nll_loss, [x, target], dtype=dtype, device="cuda",
                            reduction=reduction)
    assert_torch_parity(F.log_softmax, torch.nn.functional.log_softmax, [x], dtype=dtype, device="cuda", dim=1)
    assert_torch_parity(F.softmax, torch.nn.functional.softmax, [x], dtype=dtype, device="cuda", dim=1)


@pytest.mark.gpu
def test_cross_entropy_rejects_target_on_another_device():
    logits = mr.randn(4, 3, device="cuda")
    with pytest.raises(ValueError, match=r"cuda:0 and cpu|cpu and cuda:0"):
        F.cross_entropy(logits, mr.tensor(np.array([0, 1, 2, 0])))
    with pytest.raises(ValueError, match=r"target 5 is out of range for 3 classes"):
        F.cross_entropy(logits, mr.tensor(np.array([0, 1, 5, 0]), device="cuda"))
