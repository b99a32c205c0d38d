import numpy as np
import pytest

import minires as mr


def test_python_floats_default_to_float32_and_numpy_keeps_its_dtype():
    assert mr.tensor([1.0, 2.0]).dtype == np.float32
    assert mr.tensor(np.zeros(2)).dtype == np.float64
    assert mr.tensor([1, 2]).dtype == np.int64
    assert mr.tensor([1, 2], dtype="float64").dtype == np.float64
    assert mr.zeros(2, 3).dtype == np.float32


def test_tensor_copies_its_input():
    a = np.zeros(3, dtype=np.float32)
    t = mr.tensor(a)
    a[0] = 5
    assert t.numpy()[0] == 0
    assert mr.from_numpy(a).data is a


def test_float64_stays_float64_end_to_end():
    x = mr.tensor(np.random.randn(4, 3), requires_grad=True)
    w = mr.tensor(np.random.randn(3, 2), requires_grad=True)
    y = ((x @ w) * 2.5 + 1.0 - 0.5) / 3.0
    loss = (y ** 2).mean().exp().log().sqrt()
    assert loss.dtype == np.float64
    loss.backward()
    assert x.grad.dtype == np.float64 and w.grad.dtype == np.float64


def test_float32_scalar_ops_stay_float32():
    x = mr.tensor([1.0, 2.0], requires_grad=True)
    y = (2 * x + np.float64(3.0)) / 4 - 1 + x ** 2
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_mixed_float_dtypes_raise_type_error_naming_both():
    a = mr.tensor([1.0])
    b = mr.tensor([1.0], dtype="float64")
    with pytest.raises(TypeError, match="float32 and float64"):
        _ = a + b


def test_only_float_tensors_require_grad():
    with pytest.raises(TypeError, match="floating"):
        mr.tensor([1, 2], requires_grad=True)


def test_item_numpy_and_repr():
    t = mr.tensor([[3.5]])
    assert t.item() == 3.5
    assert isinstance(t.numpy(), np.ndarray)
    assert "3.5" in repr(t)
    with pytest.raises(ValueError, match="one-element"):
        mr.tensor([1.0, 2.0]).item()


def test_detach_cuts_the_graph():
    x = mr.tensor([1.0], requires_grad=True)
    y = (x * 2).detach()
    assert not y.requires_grad and y.is_leaf


def test_to_dtype_is_differentiable():
    x = mr.tensor([1.0, 2.0], requires_grad=True)
    y = x.double() * 3
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [3, 3])


def test_comparisons_give_boolean_tensors():
    x = mr.tensor([1.0, -1.0])
    assert (x > 0).numpy().tolist() == [True, False]


def test_ragged_input_is_refused():
    with pytest.raises((TypeError, ValueError)):
        mr.tensor([[1.0], [1.0, 2.0]])


def test_tensor_from_an_array_keeps_its_memory_layout():
    # a channels-last array stays channels-last (the CPU fast paths read that layout);
    # it is still a copy with the same shape and values
    import minires.kernels.fused as FU
    a = np.ascontiguousarray(np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5).transpose(0, 2, 3, 1))
    a = a.transpose(0, 3, 1, 2)
    t = mr.tensor(a)
    assert t.shape == a.shape and t.data.strides == a.strides and FU.is_channels_last(t.data)
    np.testing.assert_array_equal(t.numpy(), a)
    a[0, 0, 0, 0] = -1.0
    assert t.numpy()[0, 0, 0, 0] == 0.0
