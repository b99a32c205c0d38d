"""``number ** Tensor`` (Tensor.__rpow__, ops.arith.rpow): values and gradients vs PyTorch.

d(a^x)/dx = a^x log(a). PyTorch's conventions at the edges, which these tests pin down:
base 0 has gradient 0 where x >= 0 (and a^x log 0 = -inf where x < 0); a negative base
gives real values at integral x (NaN elsewhere) and a NaN gradient everywhere (log of a
negative number); an integer base with an integer tensor stays integral.
"""

import numpy as np
import pytest

import minires as mr
from minires import analysis

EDGE_X = [-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, np.nan, np.inf, -np.inf]
BASES = [2.0, 2, 0.5, 1.0, 1, 0.0, 0, -2.0, -2, -0.5, 10, np.inf, -np.inf, np.nan, True, np.float64(3.0), np.int32(3)]


def _torch_rpow(torch, base, x, dtype):
    t = torch.tensor(x, dtype=dtype, requires_grad=True)
    out = float(base) ** t if isinstance(base, (np.floating, float)) else int(base) ** t
    return t, out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("base", BASES, ids=repr)
def test_values_and_gradients_match_torch_at_the_edges(base, dtype):
    torch = pytest.importorskip("torch")
    from tests.torch_parity import _compare, DEFAULT_TOLERANCES  # noqa: PLC0415

    if isinstance(base, bool):
        pytest.skip("PyTorch's backward fails on a bool base (internal assert); the forward is checked below")
    x = np.array(EDGE_X, dtype=dtype)
    cotangent = np.linspace(-1.5, 2.0, x.size).astype(dtype)
    mine_x = mr.tensor(x, requires_grad=True)
    with np.errstate(all="ignore"):  # 0 ** -1 and (-2) ** 0.5 warn in NumPy (inf and NaN, as PyTorch)
        mine = base ** mine_x
    mine.backward(cotangent)
    torch_x, theirs = _torch_rpow(torch, base, x, getattr(torch, np.dtype(dtype).name))
    theirs.backward(torch.from_numpy(cotangent))
    rtol, atol = DEFAULT_TOLERANCES[np.dtype(dtype)]
    _compare("output", mine.numpy(), theirs.detach().numpy(), rtol, atol)
    _compare("grad", mine_x.grad, torch_x.grad.numpy(), rtol, atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("base", [2.0, 3, 0.25, -2.0, 0.0, True])
def test_forward_matches_torch_on_random_inputs(base, dtype, rng):
    torch = pytest.importorskip("torch")
    from tests.torch_parity import _compare, DEFAULT_TOLERANCES  # noqa: PLC0415

    x = rng.standard_normal((3, 4)).astype(dtype)
    x[0] = np.round(x[0] * 3)  # integral exponents: real values also for negative bases
    with np.errstate(all="ignore"):
        out = base ** mr.tensor(x)
    ref = base ** torch.tensor(x)
    _compare("output", out.numpy(), ref.numpy(), *DEFAULT_TOLERANCES[np.dtype(dtype)])


@pytest.mark.parametrize("base", [2.0, 3, 0.5, np.e])
def test_gradcheck_float64(base, rng):
    x = mr.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    assert mr.gradcheck(lambda t: base ** t, [x])
    # inside a larger expression, with the exponent also used elsewhere
    assert mr.gradcheck(lambda t: (base ** (t * t) * t).sum(axis=1), [x])


def test_base_zero_gradient_is_zero_for_nonnegative_exponents():
    x = mr.tensor([0.0, 0.5, 2.0, -1.0], requires_grad=True)
    with np.errstate(divide="ignore"):
        y = 0.0 ** x
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0, -np.inf])


@pytest.mark.parametrize("base,x_dtype", [(2, np.int64), (2.5, np.int64), (2.0, np.float32), (2, np.float64),
                                          (np.float64(2.0), np.float32), (True, np.int64)])
def test_result_dtype_follows_torch(base, x_dtype):
    torch = pytest.importorskip("torch")
    x = np.array([0, 1, 2, 3]).astype(x_dtype)
    out = base ** mr.tensor(x)
    ref = (float(base) if isinstance(base, np.floating) else base) ** torch.tensor(x)
    assert out.dtype == np.dtype(str(ref.dtype).removeprefix("torch."))
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


@pytest.mark.parametrize("base", [0, 1, -1, 2, -2, 3])
def test_integer_base_with_negative_integer_exponents_matches_torch(base):
    torch = pytest.importorskip("torch")
    x = np.array([-3, -2, -1, 0, 1, 2], dtype=np.int64)
    out = base ** mr.tensor(x)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out.numpy(), (base ** torch.tensor(x)).numpy())


def test_zero_dim_array_base_and_no_grad():
    x = mr.tensor([1.0, 2.0], requires_grad=True)
    np.testing.assert_allclose((np.array(3.0) ** x).numpy(), [3.0, 9.0])
    with mr.no_grad():
        assert not (2.0 ** x).requires_grad
    y = 2.0 ** x
    assert y.requires_grad
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.log(2.0) * np.array([2.0, 4.0]), rtol=1e-6)


@pytest.mark.parametrize("base,message", [
    ("2", "base must be a real number"),
    (None, "base must be a real number"),
    (1 + 2j, "base must be a real number"),
    ([2.0], "base must be a real number"),
    (np.array([2.0, 3.0]), "base must be a real number"),
])
def test_bad_base_gives_a_clear_type_error(base, message):
    x = mr.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match=message):
        base ** x
    with pytest.raises(TypeError, match=message):
        mr.functional.rpow(base, x)


def test_exponent_must_be_a_tensor():
    with pytest.raises(TypeError, match="exponent must be a Tensor"):
        mr.functional.rpow(2.0, np.array([1.0]))


def test_forward_mode_jvp_matches_reverse_mode(rng):
    x = rng.standard_normal((2, 3))
    v = rng.standard_normal((2, 3))

    def fn(t):
        return 3.0 ** t + 0.0 ** (t * t)  # base 0 at x*x >= 0: zero derivative

    _, jv = analysis.jvp(fn, x, v)
    xt = mr.tensor(x, requires_grad=True)
    fn(xt).backward(np.ones((2, 3)))
    np.testing.assert_allclose(jv, xt.grad * v, rtol=1e-12)
    np.testing.assert_allclose(jv, 3.0 ** x * np.log(3.0) * v, rtol=1e-12)
