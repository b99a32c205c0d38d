"""``F.linear``: plain-NumPy reference, float64 gradcheck, PyTorch parity, bad input; and
self-tests of the shared parity helper (it must be able to fail)."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from tests.torch_parity import assert_torch_parity

# (x shape, out_features, bias?)
SHAPES = [
    ((4, 5), 3, True),
    ((1, 7), 2, True),          # batch 1
    ((5,), 4, True),            # 1-d input
    ((2, 3, 6), 5, False),      # extra leading dims, no bias
    ((2, 1, 3, 4), 1, True),    # one output feature
    ((0, 3), 2, True),          # empty batch
]
IDS = [f"x{s[0]}_out{s[1]}{'' if s[2] else '_nobias'}" for s in SHAPES]


def _inputs(spec, rng):
    x_shape, out_features, bias = spec
    return [rng.standard_normal(x_shape), rng.standard_normal((out_features, x_shape[-1])),
            rng.standard_normal(out_features) if bias else None]


@pytest.mark.parametrize("spec", SHAPES, ids=IDS)
def test_matches_numpy_reference(spec, rng):
    x, w, b = _inputs(spec, rng)
    out = F.linear(mr.tensor(x), mr.tensor(w), None if b is None else mr.tensor(b))
    expected = np.einsum("...i,oi->...o", x, w) + (0 if b is None else b)
    assert out.shape == expected.shape and out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", SHAPES, ids=IDS)
def test_torch_parity(spec, dtype, rng):
    torch = pytest.importorskip("torch")
    assert_torch_parity(F.linear, torch.nn.functional.linear, _inputs(spec, rng), dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_parity_wide(dtype, rng):
    torch = pytest.importorskip("torch")
    inputs = [rng.standard_normal((16, 256)), rng.standard_normal((64, 256)) / 16, rng.standard_normal(64)]
    assert_torch_parity(F.linear, torch.nn.functional.linear, inputs, dtype=dtype)


@pytest.mark.parametrize("where", ["input", "weight", "bias"])
def test_nan_propagates_as_in_torch(where, rng):
    torch = pytest.importorskip("torch")
    x, w, b = _inputs(((3, 4), 5, True), rng)
    {"input": x, "weight": w, "bias": b}[where].flat[2] = np.nan
    for dtype in (np.float32, np.float64):
        assert_torch_parity(F.linear, torch.nn.functional.linear, [x, w, b], dtype=dtype)


@pytest.mark.parametrize("spec", SHAPES[:5], ids=IDS[:5])
def test_gradcheck_float64(spec):
    gen = np.random.default_rng(3)
    x, w, b = (None if a is None else mr.tensor(a, requires_grad=True) for a in _inputs(spec, gen))
    inputs = [x, w] + ([b] if b is not None else [])
    assert mr.gradcheck(lambda x, w, b=None: F.linear(x, w, b), inputs)


def test_only_required_gradients_are_computed(rng):
    x = mr.tensor(rng.standard_normal((3, 4)), requires_grad=True, dtype=np.float32)
    w = mr.tensor(rng.standard_normal((2, 4)), dtype=np.float32)
    b = mr.tensor(rng.standard_normal(2), dtype=np.float32)
    F.linear(x, w, b).sum().backward()
    assert x.grad.dtype == np.float32 and w.grad is None and b.grad is None
    np.testing.assert_allclose(x.grad, np.broadcast_to(w.numpy().sum(axis=0), (3, 4)), rtol=1e-6)


def _t(*shape, dtype=np.float32):
    return mr.tensor(np.zeros(shape), dtype=dtype)


@pytest.mark.parametrize("args, error, words", [
    ((_t(3, 5), _t(2, 4)), ValueError, ["(..., 4)", "(3, 5)"]),
    ((_t(3, 4), _t(2, 4, 1)), ValueError, ["rank 2", "rank 3"]),
    ((_t(3, 4), _t(4)), ValueError, ["rank 2", "rank 1"]),
    ((_t(), _t(2, 4)), ValueError, ["rank >= 1", "0-d"]),
    ((_t(3, 4), _t(2, 4), _t(3)), ValueError, ["(2,)", "(3,)"]),
    ((_t(3, 4), _t(2, 4), _t(1, 2)), ValueError, ["(2,)", "(1, 2)"]),
    ((np.zeros((3, 4)), _t(2, 4)), TypeError, ["Tensor", "ndarray"]),
    ((_t(3, 4), _t(2, 4), [0.0, 0.0]), TypeError, ["Tensor or None", "list"]),
    ((_t(3, 4, dtype=np.int64), _t(2, 4)), TypeError, ["floating", "int64"]),
    ((_t(3, 4), _t(2, 4, dtype=np.float64)), TypeError, ["float32", "float64"]),
])
def test_bad_input_raises_with_expected_and_given(args, error, words):
    with pytest.raises(error) as info:
        F.linear(*args)
    message = str(info.value)
    assert "linear" in message.lower()
    for word in words:
        assert word in message, (word, message)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", SHAPES, ids=IDS)
def test_gpu_torch_parity(spec, dtype, rng):
    torch = pytest.importorskip("torch")
    assert_torch_parity(F.linear, torch.nn.functional.linear, _inputs(spec, rng), dtype=dtype, device="cuda")


# --- the shared parity helper must be able to fail ----------------------------------------------

def test_parity_helper_catches_a_wrong_forward(rng):
    torch = pytest.importorskip("torch")
    inputs = _inputs(((4, 5), 3, True), rng)
    with pytest.raises(AssertionError, match="output"):
        assert_torch_parity(lambda x, w, b: F.linear(x, w, b) * 1.001, torch.nn.functional.linear, inputs)


def test_parity_helper_catches_a_wrong_gradient(rng):
    torch = pytest.importorskip("torch")
    inputs = _inputs(((4, 5), 3, True), rng)

    def forward_right_backward_wrong(x, w, b):
        # same value as linear, but w's gradient is scaled by 1.01
        return F.linear(x, w * 1.01, b) - F.linear(x, (w * 0.01).detach())

    with pytest.raises(AssertionError, match="grad of input 1"):
        assert_torch_parity(forward_right_backward_wrong, torch.nn.functional.linear, inputs, dtype=np.float64)


def test_parity_helper_catches_nan_mismatch_and_dtype(rng):
    torch = pytest.importorskip("torch")
    x, w, b = _inputs(((4, 5), 3, True), rng)
    with pytest.raises(AssertionError, match="NaN"):
        assert_torch_parity(lambda x, w, b: F.linear(x, w, b) * mr.tensor(np.array([1.0, np.nan, 1.0], np.float32)),
                            torch.nn.functional.linear, [x, w, b], check_grad=False)
    with pytest.raises(AssertionError, match="dtype"):
        assert_torch_parity(lambda x, w, b: F.linear(x, w, b).double(), torch.nn.functional.linear, [x, w, b],
                            check_grad=False)
