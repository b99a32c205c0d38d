"""Floor division (``//``, ``F.floor_divide``) and remainder (``%``, ``F.remainder``) against PyTorch.

PyTorch's semantics (since 1.13): ``floor_divide`` rounds toward negative infinity and
``remainder`` takes the sign of the divisor, ``a == (a // b) * b + a % b``. Result dtypes
follow :func:`minires.autograd.tensor.result_type`, as for the other arithmetic operators.

Each table compares minires with PyTorch: the same dtype and bit for bit the same values
(signed zeros, infinities and NaN included), or an error on both sides. Where PyTorch
raises, minires raises:

- an integer division by a zero (a Python 0 or a zero anywhere in an integer divisor):
  PyTorch raises ``RuntimeError('ZeroDivisionError')``; minires raises
  ``IntegerDivisionByZeroError``, both a ``ZeroDivisionError`` and a ``RuntimeError``.
- both operands bool (``bool // bool``, ``bool % True``): PyTorch raises
  ``NotImplementedError`` (no bool kernel); minires a ``TypeError`` naming the op, as
  ``sub`` does for bools.
- ``backward`` through ``floor_divide``: PyTorch raises ``RuntimeError`` (its derivative is
  not implemented); so does minires. The result still requires grad, as in PyTorch.

Deliberate difference: ``number % tensor`` has a gradient in minires (the one PyTorch
gives for ``torch.remainder(torch.tensor(number), tensor)``); PyTorch's Scalar overload
has no derivative and raises in backward.

Two floating tensors of different dtypes that are both dimensioned (or both 0-d) raise
TypeError in minires, as for every other operator (no silent casting).
"""

import itertools
import math
import operator

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires.ops.arith import IntegerDivisionByZeroError
from tests.ops.test_arith_promotion import _torch_number

torch = pytest.importorskip("torch")

DTYPES = ["bool", "uint8", "int8", "int32", "int64", "float32", "float64"]
INF, NAN = math.inf, math.nan
# dividends: both signs, zeros, exact multiples, fractions, infinities, NaN
VALUES = {
    "bool": [True, False, True, True, False, True, False, True],
    "uint8": [0, 1, 3, 7, 8, 200, 255, 9],
    "int8": [-128, -7, -3, 0, 3, 7, 127, -1],
    "int32": [-7, -3, -1, 0, 1, 3, 7, 8],
    "int64": [-7, -3, -1, 0, 1, 3, 7, 8],
    "float32": [-7.5, -3.0, -0.0, 0.0, 2.5, 7.0, INF, NAN],
    "float64": [-7.5, -3.0, -0.0, 0.0, 2.5, 7.0, -INF, NAN],
}
# divisors without a zero (the integer ones: a zero refuses, tested on its own)
DIVISORS = {
    "bool": [True] * 8,
    "uint8": [1, 2, 3, 5, 7, 250, 3, 2],
    "int8": [-1, 2, -2, 3, -3, 5, -128, 127],
    "int32": [-3, -2, -1, 1, 2, 3, 5, -7],
    "int64": [-3, -2, -1, 1, 2, 3, 5, -7],
    "float32": [-2.0, 2.0, -0.0, 0.0, 0.75, -0.75, INF, -INF],
    "float64": [-2.0, 2.0, 3.0, -0.0, 0.75, -INF, INF, NAN],
}
NUMBERS = [True, False, 0, 2, -2, 3, -3, 1.5, -0.75, 0.0, -0.0, INF, -INF, NAN,
           np.float32(2.5), np.float64(-1.25), np.int64(-3), np.bool_(True)]
OPS = {"floordiv": operator.floordiv, "mod": operator.mod}


def _both(values, dtype, shape=(8,)):
    """The same values as a minires tensor and a torch tensor of ``dtype`` and ``shape``."""
    array = np.resize(np.array(values, dtype=dtype), shape)
    return mr.tensor(array), torch.from_numpy(array.copy())


def _run(fn, *args):
    try:
        with np.errstate(all="raise"):  # minires must silence its own NumPy warnings
            return fn(*args), None
    except Exception as error:  # noqa: BLE001  (compared with the other side's outcome)
        return None, error


def _assert_same(case, mine, theirs):
    (out, error), (ref, ref_error) = mine, theirs
    if ref_error is not None:
        assert error is not None, f"{case}: torch raises {ref_error!r}, minires gives {out!r}"
        if "ZeroDivisionError" in str(ref_error):
            assert isinstance(error, IntegerDivisionByZeroError), f"{case}: {error!r}"
            assert isinstance(error, ZeroDivisionError) and isinstance(error, RuntimeError)
        else:
            assert isinstance(ref_error, NotImplementedError), f"{case}: torch {ref_error!r}"
            assert isinstance(error, TypeError) and "bool" in str(error), f"{case}: {error!r}"
        return
    assert error is None, f"{case}: minires raises {error!r}, torch gives {ref!r}"
    ref = ref.detach().numpy()
    mine = out.numpy()
    assert mine.dtype == ref.dtype, f"{case}: dtype {mine.dtype}, torch {ref.dtype}"
    assert mine.shape == ref.shape, f"{case}: shape {mine.shape}, torch {ref.shape}"
    np.testing.assert_array_equal(mine, ref, err_msg=case)  # NaN where torch has NaN
    if ref.dtype.kind == "f":
        numbers_only = ~np.isnan(ref)  # the sign of a NaN carries nothing
        np.testing.assert_array_equal(np.signbit(mine[numbers_only]), np.signbit(ref[numbers_only]),
                                      err_msg=f"{case}: signed zeros")


@pytest.mark.parametrize("reverse", [False, True], ids=["tensor_op_number", "number_op_tensor"])
@pytest.mark.parametrize("number", NUMBERS, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_and_number_match_torch(dtype, number, reverse):
    for values in (VALUES[dtype], DIVISORS[dtype]):  # with and without zeros in the tensor
        mine, theirs = _both(values, dtype)
        for name, op in OPS.items():
            case = f"{number!r} {name} {dtype}{values}" if reverse else f"{dtype}{values} {name} {number!r}"
            if reverse:
                mine_result = _run(lambda t: op(number, t), mine)
                torch_result = _run(lambda t: op(_torch_number(number), t), theirs)
            else:
                mine_result, torch_result = _run(op, mine, number), _run(op, theirs, _torch_number(number))
            _assert_same(case, mine_result, torch_result)


@pytest.mark.parametrize("shapes", [((8,), (8,)), ((8,), ()), ((), (8,)), ((2, 8), (8,)), ((), ())], ids=str)
@pytest.mark.parametrize("dtype_a,dtype_b", list(itertools.product(DTYPES, DTYPES)))
def test_tensor_and_tensor_match_torch(dtype_a, dtype_b, shapes):
    a, ta = _both(VALUES[dtype_a], dtype_a, shapes[0])
    refused = (dtype_a != dtype_b and dtype_a.startswith("float") and dtype_b.startswith("float")
               and (a.ndim == 0) == (len(shapes[1]) == 0))
    for divisors in (DIVISORS[dtype_b], VALUES[dtype_b]):  # without and with zeros
        b, tb = _both(divisors, dtype_b, shapes[1])
        for name, op in OPS.items():
            case = f"{dtype_a}{shapes[0]} {name} {dtype_b}{shapes[1]} {divisors}"
            if refused:  # minires' deliberate choice: mixed floats of the same rank class do not mix
                with pytest.raises(TypeError, match=f"{dtype_a} and {dtype_b}|{dtype_b} and {dtype_a}"):
                    op(a, b)
                continue
            _assert_same(case, _run(op, a, b), _run(op, ta, tb))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_random_floats_match_torch_bit_for_bit(dtype, rng):
    """Wide magnitudes and both signs: the rounding of ``floor`` near integers as PyTorch's ``div_floor``."""
    n = 4000
    a = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 9, n)).astype(dtype)
    b = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 9, n)).astype(dtype)
    a[:200] = rng.integers(-50, 50, 200)  # exact multiples and near-integer quotients
    b[:200] = rng.choice([-0.1, 0.1, 0.2, -0.3, 3.0, -7.0], 200)
    for name, op in OPS.items():
        _assert_same(f"random {dtype} {name}", _run(op, mr.tensor(a), mr.tensor(b)),
                     _run(op, torch.from_numpy(a), torch.from_numpy(b)))


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8"])
def test_random_integers_match_torch(dtype, rng):
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, 2000, endpoint=True).astype(dtype)
    b = rng.integers(info.min, info.max, 2000, endpoint=True).astype(dtype)
    b[b == 0] = 1
    b[:50] = rng.choice([1, 2, 3] + ([-1, -2, -3] if info.min < 0 else []), 50)
    for name, op in OPS.items():
        _assert_same(f"random {dtype} {name}", _run(op, mr.tensor(a), mr.tensor(b)),
                     _run(op, torch.from_numpy(a), torch.from_numpy(b)))


def test_identity_and_known_values():
    a, b = mr.tensor([7, -7, 7, -7]), mr.tensor([2, 2, -2, -2])
    assert (a // b).tolist() == [3, -4, -4, 3]
    assert (a % b).tolist() == [1, 1, -1, -1]
    assert ((a // b) * b + a % b).tolist() == a.tolist()
    assert (mr.tensor([5.5, -5.5]) % 2).tolist() == [1.5, 0.5]
    assert (mr.tensor(np.array([5], np.int32)) // 2).dtype == np.int32  # int // int stays int
    assert (mr.tensor([5]) // 1.5).dtype == np.float32  # int // Python float: float32
    assert (mr.tensor([True, False]) // 2).dtype == np.int64
    assert (mr.tensor([5.0], dtype="float64") % 2).dtype == np.float64


def test_functional_forms_and_methods_match_operators():
    a, b = mr.tensor([7.0, -7.5, 3.0]), mr.tensor([2.0, 2.0, -1.25])
    for out, ref in [(F.floor_divide(a, b), a // b), (F.remainder(a, b), a % b),
                     (a.floor_divide(b), a // b), (a.remainder(b), a % b),
                     (a.floor_divide(2), a // 2), (a.remainder(-2), a % -2)]:
        np.testing.assert_array_equal(out.numpy(), ref.numpy())
    np.testing.assert_array_equal((np.array([7.0, 8.0], np.float32) // mr.tensor([2.0, 3.0])).numpy(), [3.0, 2.0])
    np.testing.assert_array_equal((np.array([7.0, 8.0], np.float32) % mr.tensor([2.0, 3.0])).numpy(), [1.0, 2.0])


# --- gradients ---------------------------------------------------------------------------

def _away_from_jumps(rng, shape):
    """Dividends whose quotients by the divisors below stay >= 0.1 from an integer."""
    return rng.integers(-5, 5, shape) + rng.uniform(0.2, 0.8, shape)


REMAINDER_CASES = {
    "tensor % tensor": (lambda a, b: a % b, True, True),
    "tensor % number": (lambda a, b: a % 1.0, True, False),
    "tensor % -number": (lambda a, b: a % -1.0, True, False),
    "number % tensor": (lambda a, b: 2.5 % b, False, True),
    "F.remainder": (lambda a, b: F.remainder(a, b), True, True),
}


@pytest.mark.parametrize("case", list(REMAINDER_CASES))
def test_remainder_gradcheck(case, rng):
    fn, grad_a, grad_b = REMAINDER_CASES[case]
    a = mr.tensor(_away_from_jumps(rng, (2, 3)), requires_grad=grad_a)
    b = mr.tensor(rng.choice([-3.0, -2.0, 1.0, 4.0], (2, 3)) + rng.uniform(-0.01, 0.01, (2, 3)), requires_grad=grad_b)
    assert mr.gradcheck(fn, [a, b])


def test_remainder_gradcheck_broadcast(rng):
    a = mr.tensor(_away_from_jumps(rng, (2, 3)), requires_grad=True)
    b = mr.tensor(np.array([-2.0, 1.0, 4.0]) + 0.005, requires_grad=True)
    s = mr.tensor(np.float64(3.0), requires_grad=True)
    assert mr.gradcheck(lambda a, b: a % b, [a, b])
    assert mr.gradcheck(lambda a, s: a % s, [a, s])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_remainder_gradients_match_torch(dtype, rng):
    a_values = np.concatenate([_away_from_jumps(rng, 6), [5.0, -5.0, 0.0, 1.0]]).astype(dtype)
    b_values = np.array([2.0, -2.0, 0.75, -0.75, 3.0, -1.5, 2.5, 2.5, 0.0, INF], dtype)
    cotangent = rng.standard_normal(10).astype(dtype)
    a, b = mr.tensor(a_values, requires_grad=True), mr.tensor(b_values, requires_grad=True)
    ta, tb = torch.tensor(a_values, requires_grad=True), torch.tensor(b_values, requires_grad=True)
    with np.errstate(all="raise"):
        out = a % b
        out.backward(cotangent)
    ref = ta % tb
    ref.backward(torch.from_numpy(cotangent))
    _assert_same("remainder", (out, None), (ref, None))
    np.testing.assert_array_equal(a.grad, ta.grad.numpy())
    np.testing.assert_array_equal(b.grad, tb.grad.numpy())  # -cotangent * (a // b): inf / NaN at b = 0
    assert a.grad.dtype == b.grad.dtype == np.dtype(dtype)


def test_remainder_number_first_gradient_is_torch_zero_dim(rng):
    b_values = np.array([2.0, -2.0, 0.75, -3.5])
    b, tb = mr.tensor(b_values, requires_grad=True), torch.tensor(b_values, requires_grad=True)
    (2.5 % b).sum().backward()
    torch.remainder(torch.tensor(2.5, dtype=torch.float64), tb).sum().backward()
    np.testing.assert_array_equal(b.grad, tb.grad.numpy())


def test_remainder_float32_with_float64_zero_dim_gradients(rng):
    x = mr.tensor(_away_from_jumps(rng, (2, 3)).astype(np.float32), requires_grad=True)
    s = mr.tensor(np.float64(1.75), requires_grad=True)
    tx, ts = torch.tensor(x.numpy(), requires_grad=True), torch.tensor(1.75, dtype=torch.float64, requires_grad=True)
    out, ref = x % s, tx % ts
    assert out.dtype == np.float32
    out.sum().backward()
    ref.sum().backward()
    assert x.grad.dtype == np.float32 and s.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad, tx.grad.numpy())
    np.testing.assert_allclose(s.grad, ts.grad.numpy())


@pytest.mark.parametrize("fn", [lambda x: x // 2.0, lambda x: 2.0 // x, lambda x: x // x,
                                lambda x: F.floor_divide(x, x), lambda x: mr.tensor([3, 4]) // x],
                         ids=["t//n", "n//t", "t//t", "F", "ints//t"])
def test_floor_divide_backward_raises_as_in_torch(fn):
    x = mr.tensor([7.0, -7.5], requires_grad=True)
    out = fn(x)
    assert out.requires_grad  # as in PyTorch: recorded, and refused in backward
    with pytest.raises(RuntimeError, match="floor_divide.*not implemented"):
        out.sum().backward()
    tx = torch.tensor([7.0, -7.5], requires_grad=True)
    with pytest.raises(RuntimeError, match="floor_divide is not implemented"):
        (tx // 2.0).sum().backward()


def test_floor_divide_without_grad_mode_is_not_recorded():
    x = mr.tensor([7.0, -7.5], requires_grad=True)
    with mr.no_grad():
        out = x // 2
    assert not out.requires_grad
    y = (x * (x.detach() // 2)).sum()  # a detached floor division is a constant
    y.backward()
    np.testing.assert_array_equal(x.grad, [3.0, -4.0])


# --- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("op", [operator.floordiv, operator.mod], ids=["floordiv", "mod"])
def test_integer_division_by_zero_raises(op):
    ints = mr.tensor([7, -7, 3])
    for call in (lambda: op(ints, 0), lambda: op(ints, mr.tensor([1, 0, 2])), lambda: op(5, ints - 3),
                 lambda: op(ints, mr.tensor(0)), lambda: op(ints, False)):
        with pytest.raises(ZeroDivisionError, match="division by zero") as info:
            call()
        assert isinstance(info.value, RuntimeError)  # PyTorch raises RuntimeError('ZeroDivisionError')
        assert ("floor_divide" if op is operator.floordiv else "remainder") in str(info.value)
    assert op(mr.tensor([7.0]), 0).dtype == np.float32  # floats divide by zero to inf / NaN


@pytest.mark.parametrize("name", ["floor_divide", "remainder"])
def test_bad_input(name):
    fn = getattr(F, name)
    bools = mr.tensor([True, False])
    with pytest.raises(TypeError, match=f"{name}.*bool"):
        fn(bools, bools)
    with pytest.raises(TypeError, match=f"{name}.*bool"):
        getattr(bools, name)(True)
    with pytest.raises(TypeError, match=f"{name}: expected Tensors"):
        fn(mr.tensor([1.0]), 2.0)
    with pytest.raises(ValueError, match=f"{name}: shapes \\(2,\\) and \\(3,\\) cannot be broadcast"):
        fn(mr.tensor([1.0, 2.0]), mr.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match="float32 and float64|float64 and float32"):
        fn(mr.tensor([1.0]), mr.tensor([1.0], dtype="float64"))
    for bad in ("2", None, [1, 2], 1 + 2j):
        with pytest.raises(TypeError):
            getattr(mr.tensor([1.0]), name)(bad)
        with pytest.raises(TypeError):
            mr.tensor([1.0]) // bad if name == "floor_divide" else mr.tensor([1.0]) % bad  # noqa: B018
