"""Bad input through the public API: every op must refuse it with a clear error.

Each case feeds one op something wrong (rank, channel/group mismatch, mixed dtypes,
non-integer targets, a kernel larger than the padded input, ...) and requires a
``ValueError`` or ``TypeError`` whose message names the op and states both what was
expected and what was given (the ``needles`` below), never a bare NumPy message, an
``IndexError``, ``AttributeError`` or ``ZeroDivisionError``. Only ``minires``,
``minires.functional``, ``minires.nn`` and ``minires.optim`` are used.
"""

from __future__ import annotations

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import nn
from minires.optim import SGD


def f32(*shape):
    return mr.randn(*shape)


def f64(*shape):
    return mr.randn(*shape, dtype="float64")


def i64(*shape):
    return mr.tensor(np.zeros(shape, dtype=np.int64))


# (id, call, exception type, substrings that must all appear in the message)
CASES = [
    # conv2d
    ("conv2d rank 2 input", lambda: F.conv2d(f32(3, 4), f32(2, 3, 1, 1)), ValueError, ["conv2d", "rank 4", "(3, 4)"]),
    ("conv2d rank 5 input", lambda: F.conv2d(f32(1, 3, 4, 4, 4), f32(2, 3, 1, 1)), ValueError, ["conv2d", "rank 5"]),
    ("conv2d rank 3 weight", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 3, 1)), ValueError, ["conv2d", "rank 4", "(2, 3, 1)"]),
    ("conv2d channel mismatch", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 2, 1, 1)), ValueError,
     ["conv2d", "2 channels", "3 channels"]),
    ("conv2d groups vs input channels", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 1, 1, 1), groups=2), ValueError,
     ["conv2d", "(3)", "groups (2)"]),
    ("conv2d groups vs output channels", lambda: F.conv2d(f32(1, 4, 4, 4), f32(3, 2, 1, 1), groups=2), ValueError,
     ["conv2d", "(3", "groups (2)"]),
    ("conv2d groups 0", lambda: F.conv2d(f32(1, 4, 4, 4), f32(3, 2, 1, 1), groups=0), ValueError, ["groups", "0"]),
    ("conv2d groups float", lambda: F.conv2d(f32(1, 4, 4, 4), f32(4, 2, 1, 1), groups=2.0), TypeError,
     ["groups", "int", "2.0"]),
    ("conv2d kernel larger than padded input", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 3, 7, 7), padding=1),
     ValueError, ["conv2d", "(7, 7)", "(6, 6)"]),
    ("conv2d stride 0", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 3, 1, 1), stride=0), ValueError, ["stride", "0"]),
    ("conv2d negative padding", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 3, 1, 1), padding=-1), ValueError,
     ["padding", "-1"]),
    ("conv2d padding triple", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 3, 1, 1), padding=(1, 1, 1)), ValueError,
     ["padding", "pair", "(1, 1, 1)"]),
    ("conv2d stride string", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 3, 1, 1), stride="2"), TypeError,
     ["stride", "'2'"]),
    ("conv2d bias shape", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 3, 1, 1), f32(3)), ValueError,
     ["bias", "(2,)", "(3,)"]),
    ("conv2d mixed dtypes", lambda: F.conv2d(f32(1, 3, 4, 4), f64(2, 3, 1, 1)), TypeError, ["float32", "float64"]),
    ("conv2d integer input", lambda: F.conv2d(i64(1, 3, 4, 4), f32(2, 3, 1, 1)), TypeError, ["conv2d", "int64"]),
    ("conv2d NumPy input", lambda: F.conv2d(np.zeros((1, 3, 4, 4), np.float32), f32(2, 3, 1, 1)), TypeError,
     ["conv2d", "Tensor", "ndarray"]),
    ("conv2d same with stride 2", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 3, 3, 3), stride=2, padding="same"),
     ValueError, ["same", "stride"]),
    ("conv2d unknown padding mode", lambda: F.conv2d(f32(1, 3, 4, 4), f32(2, 3, 3, 3), padding="full"), ValueError,
     ["padding", "'full'"]),
    # batch_norm
    ("batch_norm rank 1", lambda: F.batch_norm(f32(3), None, None, training=True), ValueError,
     ["batch_norm", "(N, C)", "(3,)"]),
    ("batch_norm running stat shape", lambda: F.batch_norm(f32(2, 3, 4, 4), mr.zeros(4), mr.ones(4)), ValueError,
     ["running_mean", "(3,)", "(4,)"]),
    ("batch_norm weight shape", lambda: F.batch_norm(f32(2, 3, 4, 4), mr.zeros(3), mr.ones(3), f32(4)), ValueError,
     ["weight", "(3,)", "(4,)"]),
    ("batch_norm mixed dtypes", lambda: F.batch_norm(f32(2, 3, 4, 4), mr.zeros(3), mr.ones(3), f64(3)), TypeError,
     ["float32", "float64"]),
    ("batch_norm stats dtype", lambda: F.batch_norm(f32(2, 3), mr.zeros(3, dtype="float64"), mr.ones(3)), TypeError,
     ["running_mean", "float64", "float32"]),
    ("batch_norm integer input", lambda: F.batch_norm(i64(2, 3), None, None, training=True), TypeError,
     ["batch_norm", "int64"]),
    ("batch_norm eval without stats", lambda: F.batch_norm(f32(2, 3), None, None), ValueError,
     ["running_mean", "training=False"]),
    ("batch_norm one value per channel", lambda: F.batch_norm(f32(1, 3), None, None, training=True), ValueError,
     ["more than 1 value", "(1, 3)"]),
    ("batch_norm zero channels", lambda: F.batch_norm(f32(2, 0), None, None, training=True), ValueError,
     ["batch_norm", "channel", "(2, 0)"]),
    ("batch_norm stats as list", lambda: F.batch_norm(f32(2, 3), [0, 0, 0], [1, 1, 1]), TypeError,
     ["running_mean", "list"]),
    # activations
    ("relu integer", lambda: F.relu(i64(3)), TypeError, ["relu", "int64"]),
    ("relu NumPy", lambda: F.relu(np.zeros(3)), TypeError, ["relu", "Tensor", "ndarray"]),
    ("sigmoid None", lambda: F.sigmoid(None), TypeError, ["sigmoid", "Tensor", "NoneType"]),
    # pooling
    ("max_pool2d rank 2", lambda: F.max_pool2d(f32(4, 4), 2), ValueError, ["max_pool2d", "(4, 4)"]),
    ("max_pool2d kernel larger than input", lambda: F.max_pool2d(f32(1, 1, 3, 3), 4), ValueError,
     ["max_pool2d", "(4, 4)", "(3, 3)"]),
    ("max_pool2d padding over half the kernel", lambda: F.max_pool2d(f32(1, 1, 6, 6), 2, padding=2), ValueError,
     ["padding", "half", "(2, 2)"]),
    ("max_pool2d kernel 0", lambda: F.max_pool2d(f32(1, 1, 6, 6), 0), ValueError, ["kernel_size", "0"]),
    ("max_pool2d kernel float", lambda: F.max_pool2d(f32(1, 1, 6, 6), 2.0), TypeError, ["kernel_size", "2.0"]),
    ("max_pool2d integer input", lambda: F.max_pool2d(i64(1, 1, 6, 6), 2), TypeError, ["max_pool2d", "int64"]),
    ("avg_pool2d kernel larger than input", lambda: F.avg_pool2d(f32(1, 1, 3, 3), 4), ValueError,
     ["avg_pool2d", "(4, 4)", "(3, 3)"]),
    ("avg_pool2d rank 5", lambda: F.avg_pool2d(f32(1, 1, 1, 4, 4), 2), ValueError, ["avg_pool2d", "(1, 1, 1, 4, 4)"]),
    ("adaptive_avg_pool2d output 0", lambda: F.adaptive_avg_pool2d(f32(1, 1, 4, 4), 0), ValueError,
     ["output_size", "0"]),
    ("adaptive_avg_pool2d output None", lambda: F.adaptive_avg_pool2d(f32(1, 1, 4, 4), None), TypeError,
     ["output_size", "None"]),
    ("adaptive_avg_pool2d rank 2", lambda: F.adaptive_avg_pool2d(f32(4, 4), 1), ValueError,
     ["adaptive_avg_pool2d", "(4, 4)"]),
    # linear
    ("linear feature mismatch", lambda: F.linear(f32(2, 3), f32(4, 5)), ValueError, ["linear", "5", "(2, 3)"]),
    ("linear rank 1 weight", lambda: F.linear(f32(2, 3), f32(3)), ValueError, ["linear", "rank 2", "(3,)"]),
    ("linear bias shape", lambda: F.linear(f32(2, 3), f32(4, 3), f32(3)), ValueError, ["bias", "(4,)", "(3,)"]),
    ("linear mixed dtypes", lambda: F.linear(f32(2, 3), f64(4, 3)), TypeError, ["float32", "float64"]),
    # softmax family and cross entropy
    ("log_softmax axis out of range", lambda: F.log_softmax(f32(2, 3), 2), ValueError, ["log_softmax", "2", "(2, 3)"]),
    ("softmax axis float", lambda: F.softmax(f32(2, 3), 1.0), TypeError, ["softmax", "int", "1.0"]),
    ("softmax integer input", lambda: F.softmax(i64(2, 3)), TypeError, ["softmax", "int64"]),
    ("cross_entropy float targets", lambda: F.cross_entropy(f32(2, 3), mr.tensor([0.0, 1.0])), TypeError,
     ["cross_entropy", "integer", "float32"]),
    ("cross_entropy bool targets", lambda: F.cross_entropy(f32(2, 3), mr.tensor(np.array([True, False]))),
     TypeError, ["cross_entropy", "integer", "bool"]),
    ("cross_entropy list targets", lambda: F.cross_entropy(f32(2, 3), [0, 1]), TypeError,
     ["cross_entropy", "Tensor", "list"]),
    ("cross_entropy target out of range", lambda: F.cross_entropy(f32(2, 3), mr.tensor([0, 3])), ValueError,
     ["cross_entropy", "3", "0 <= target < 3"]),
    ("cross_entropy negative target", lambda: F.cross_entropy(f32(2, 3), mr.tensor([0, -1])), ValueError,
     ["cross_entropy", "-1"]),
    ("cross_entropy target shape", lambda: F.cross_entropy(f32(2, 3), mr.tensor([0, 1, 2])), ValueError,
     ["cross_entropy", "(3,)", "(2,)"]),
    ("cross_entropy label_smoothing > 1", lambda: F.cross_entropy(f32(2, 3), mr.tensor([0, 1]), label_smoothing=1.5),
     ValueError, ["label_smoothing", "1.5"]),
    ("cross_entropy integer logits", lambda: F.cross_entropy(i64(2, 3), mr.tensor([0, 1])), TypeError,
     ["cross_entropy", "int64"]),
    # cat, flatten, pad
    ("cat empty", lambda: F.cat([]), ValueError, ["cat", "non-empty"]),
    ("cat of a Tensor", lambda: F.cat(f32(2, 3)), TypeError, ["cat", "list or tuple", "Tensor"]),
    ("cat rank mismatch", lambda: F.cat([f32(2, 3), f32(2)]), ValueError, ["cat", "(2, 3)", "(2,)"]),
    ("cat shape mismatch", lambda: F.cat([f32(2, 3), f32(3, 3)], axis=1), ValueError, ["cat", "(2, 3)", "(3, 3)"]),
    ("cat axis out of range", lambda: F.cat([f32(2, 3), f32(2, 3)], axis=2), ValueError, ["cat", "axis 2", "2 dim"]),
    ("cat axis float", lambda: F.cat([f32(2, 3), f32(2, 3)], axis=1.0), TypeError, ["cat", "int", "1.0"]),
    ("cat mixed float dtypes", lambda: F.cat([f32(2, 3), f64(2, 3)]), TypeError, ["float32", "float64"]),
    ("cat NumPy piece", lambda: F.cat([f32(2, 3), np.zeros((2, 3), np.float32)]), TypeError,
     ["cat", "Tensor", "ndarray"]),
    ("flatten start after end", lambda: F.flatten(f32(2, 3, 4), 2, 1), ValueError, ["flatten", "2", "1"]),
    ("flatten float dim", lambda: F.flatten(f32(2, 3), 1.5), TypeError, ["flatten", "int", "1.5"]),
    ("pad odd length", lambda: F.pad(f32(2, 3), (1,)), ValueError, ["pad", "even", "(1,)"]),
    ("pad too long", lambda: F.pad(f32(2, 3), (1, 1, 1, 1, 1, 1)), ValueError, ["pad", "at most 4"]),
    ("pad negative", lambda: F.pad(f32(2, 3), (-1, 1)), ValueError, ["pad", "(-1, 1)"]),
    ("pad float sizes", lambda: F.pad(f32(2, 3), (1.5, 1)), TypeError, ["pad", "int", "1.5"]),
    ("pad not a sequence", lambda: F.pad(f32(2, 3), 1), TypeError, ["pad", "tuple", "1"]),
    ("pad string value", lambda: F.pad(f32(2, 3), (1, 1), "a"), TypeError, ["pad", "value", "'a'"]),
    # arithmetic, reductions, shapes, indexing, matmul, pow
    ("add shapes", lambda: f32(2, 3) + f32(4), ValueError, ["add", "(2, 3)", "(4,)"]),
    ("mul shapes", lambda: f32(2, 3) * f32(2), ValueError, ["mul", "(2, 3)", "(2,)"]),
    ("sub mixed dtypes", lambda: f32(2, 3) - f64(2, 3), TypeError, ["float32", "float64"]),
    ("div by a float64 array", lambda: f32(3) / np.ones(3), TypeError, ["float32", "float64"]),
    ("add None", lambda: f32(2, 3) + None, TypeError, ["NoneType", "expected"]),
    ("add string", lambda: f32(2, 3) + "a", TypeError, ["str", "expected"]),
    ("add list", lambda: f32(2, 3) + [1, 2, 3], TypeError, ["list"]),
    ("sum axis out of range", lambda: f32(2, 3).sum(2), ValueError, ["sum", "axis 2", "2 dim"]),
    ("sum axis float", lambda: f32(2, 3).sum(1.5), TypeError, ["sum", "axis", "1.5"]),
    ("sum axis string", lambda: f32(2, 3).sum("a"), TypeError, ["sum", "axis", "'a'"]),
    ("sum keepdims string", lambda: f32(2, 3).sum(0, "yes"), TypeError, ["sum", "keepdims", "'yes'"]),
    ("mean axis out of range", lambda: f32(2, 3).mean(-3), ValueError, ["mean", "-3"]),
    ("mean of integers", lambda: i64(2, 3).mean(), TypeError, ["mean", "int64"]),
    ("reshape size mismatch", lambda: f32(2, 3).reshape(4, 2), ValueError, ["reshape", "(2, 3)", "(4, 2)"]),
    ("reshape two -1", lambda: f32(2, 3).reshape(-1, -1), ValueError, ["reshape", "(-1, -1)"]),
    ("reshape -2", lambda: f32(2, 3).reshape(-2, -3), ValueError, ["reshape", "(-2, -3)"]),
    ("reshape float size", lambda: f32(2, 3).reshape(2.5, 2), TypeError, ["reshape", "int", "2.5"]),
    ("transpose axis out of range", lambda: f32(2, 3).transpose(0, 2), ValueError, ["transpose", "axis 2"]),
    ("transpose float axis", lambda: f32(2, 3).transpose(0, 1.5), TypeError, ["transpose", "int", "1.5"]),
    ("permute repeated axis", lambda: f32(2, 3).permute(0, 0), ValueError, ["permute", "(0, 0)"]),
    ("index out of range", lambda: f32(2, 3)[5], ValueError, ["index", "5", "(2, 3)"]),
    ("too many indices", lambda: f32(2, 3)[0, 0, 0], ValueError, ["(0, 0, 0)", "(2, 3)"]),
    ("float index", lambda: f32(2, 3)[1.5], ValueError, ["1.5", "(2, 3)"]),
    ("integer array index out of range", lambda: f32(2, 3)[np.array([0, 5])], ValueError, ["5", "(2, 3)"]),
    ("boolean mask of the wrong length", lambda: f32(2, 3)[np.array([True, False, True])], ValueError,
     ["(2, 3)", "boolean"]),
    ("float tensor as index", lambda: f32(2, 3)[mr.tensor([0.0, 1.0])], ValueError, ["(2, 3)", "integer"]),
    ("matmul inner mismatch", lambda: f32(2, 3) @ f32(4, 5), ValueError, ["matmul", "(2, 3)", "(4, 5)"]),
    ("matmul batch mismatch", lambda: f32(2, 2, 3) @ f32(3, 3, 2), ValueError, ["matmul", "(2,)", "(3,)"]),
    ("matmul 0-d", lambda: mr.tensor(1.0) @ f32(3), ValueError, ["matmul", "()", "(3,)"]),
    ("matmul mixed dtypes", lambda: f32(2, 3) @ f64(3, 2), TypeError, ["float32", "float64"]),
    ("pow tensor exponent", lambda: f32(3) ** f32(3), TypeError, ["pow", "number", "Tensor"]),
    # tensor creation
    ("tensor from a string", lambda: mr.tensor("abc"), TypeError, ["str", "expected"]),
    ("tensor from ragged lists", lambda: mr.tensor([[1.0], [1.0, 2.0]]), TypeError, ["ragged"]),
    ("tensor unknown device", lambda: mr.tensor([1.0], device="tpu"), ValueError, ["'tpu'", "cpu"]),
    ("tensor unknown dtype", lambda: mr.tensor([1.0], dtype="float17"), TypeError, ["float17"]),
    ("integer tensor requiring grad", lambda: mr.tensor([1], requires_grad=True), TypeError, ["int64", "floating"]),
    ("randn negative size", lambda: mr.randn(-1, 2), ValueError, ["(-1, 2)", "non-negative"]),
    ("zeros float size", lambda: mr.zeros(2.5), TypeError, ["(2.5,)", "int"]),
    # layers and SGD
    ("Conv2d channel mismatch", lambda: nn.Conv2d(3, 4, 3)(f32(1, 2, 5, 5)), ValueError, ["3 channels", "2 channels"]),
    ("Linear feature mismatch", lambda: nn.Linear(3, 4)(f32(2, 5)), ValueError, ["(..., 3)", "(2, 5)"]),
    ("BatchNorm2d channel mismatch", lambda: nn.BatchNorm2d(3)(f32(2, 4, 5, 5)), ValueError, ["3", "(2, 4, 5, 5)"]),
    ("BatchNorm2d rank 2", lambda: nn.BatchNorm2d(3)(f32(2, 3)), ValueError, ["4D", "(2, 3)"]),
    ("BatchNorm2d float64 input", lambda: nn.BatchNorm2d(3)(f64(2, 3, 2, 2)), TypeError, ["float32", "float64"]),
    ("Conv2d groups", lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, ["divisible", "3", "2"]),
    ("load_state_dict shape", lambda: nn.Linear(3, 4).load_state_dict(
        {"weight": np.zeros((4, 4), np.float32), "bias": np.zeros(4, np.float32)}), ValueError,
     ["weight", "(4, 4)", "(4, 3)"]),
    ("load_state_dict missing key", lambda: nn.Linear(3, 4).load_state_dict({"weight": np.zeros((4, 3), np.float32)}),
     ValueError, ["bias"]),
    ("SGD negative lr", lambda: SGD(nn.Linear(2, 2).parameters(), lr=-1), ValueError, ["lr", "-1"]),
    ("SGD nesterov without momentum", lambda: SGD(nn.Linear(2, 2).parameters(), lr=0.1, nesterov=True), ValueError,
     ["Nesterov", "momentum"]),
    ("SGD weight_decay string", lambda: SGD(nn.Linear(2, 2).parameters(), lr=0.1, weight_decay="a"), TypeError,
     ["weight_decay", "str"]),
]


@pytest.mark.parametrize("call, exc, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(call, exc, needles):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    missing = [n for n in needles if n not in message]
    assert not missing, f"message {message!r} lacks {missing}"


def test_index_errors_are_also_index_errors():
    """Bad indexes raise an error that is both ValueError and IndexError (NumPy/PyTorch habit, iteration)."""
    with pytest.raises(IndexError):
        f32(2, 3)[5]
    assert [row.shape for row in f32(3, 2)] == [(2,)] * 3  # iteration stops at the IndexError


def test_integer_operands_join_the_float_dtype():
    """float32 op int64 used to give float64 (NumPy's promotion); PyTorch keeps float32."""
    x = mr.randn(3, requires_grad=True)
    ints = mr.tensor([1, 2, 3])
    for result in (x + ints, ints + x, x * ints, x - ints, x / ints, F.cat([x, ints], axis=0),
                   mr.tensor(np.ones((2, 3), np.int64)) @ x):
        assert result.dtype == np.float32
    (x * ints).sum().backward()
    np.testing.assert_array_equal(x.grad, [1, 2, 3])
    assert x.grad.dtype == np.float32
    assert (x.double() + ints).dtype == np.float64
    assert (ints + ints).dtype == np.int64


def test_named_conv_algorithm_leaves_unsupported_problems_to_the_reference():
    """'nhwc' does not do grouped convolutions: asking for it used to crash inside its GEMM."""
    x = mr.randn(2, 4, 6, 6, dtype="float64", requires_grad=True)
    w = mr.randn(6, 2, 3, 3, dtype="float64", requires_grad=True)
    results = []
    for name in F.available_conv_algorithms():
        x.grad = w.grad = None
        with F.conv_algorithm(name):
            out = F.conv2d(x, w, stride=2, padding=1, groups=2)
            (out * out).sum().backward()
        results.append((out.numpy(), x.grad.copy(), w.grad.copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_mixed_devices_name_both():
    for call in (lambda x, w: F.conv2d(x, w), lambda x, w: x + w[0, 0, 0, 0], lambda x, w: F.cat([x, x.to("cpu")])):
        x, w = mr.randn(1, 3, 4, 4, device="cuda"), mr.randn(2, 3, 1, 1)
        with pytest.raises(ValueError) as info:
            call(x, w)
        assert "cpu" in str(info.value) and "cuda" in str(info.value)
    with pytest.raises(ValueError, match="running_mean"):
        F.batch_norm(mr.randn(2, 3, device="cuda"), mr.zeros(3), mr.ones(3))
