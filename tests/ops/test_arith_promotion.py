"""Result dtypes of the arithmetic operators follow PyTorch's type promotion, not NumPy's.

PyTorch's rule (``torch.result_type``): the result's category (bool < integer < float) is
the highest among the operands; its dtype comes from the operands of that category of the
highest priority: dimensioned tensors, then 0-d tensors, then Python/NumPy numbers, which
give the default dtype of their category (int64, float32). So ``int64_tensor * 1.5`` is
float32 (NumPy: float64), ``int32_tensor + 1`` stays int32, ``float32_tensor + float64_0d``
is float32, and true division of integers gives float32.

Each table compares minires with PyTorch: the same dtype and values, or an error on both
sides. Deliberate differences, kept on purpose:

- Two floating tensors of different dtypes that are both dimensioned (or both 0-d) raise
  TypeError in minires (no silent casting, see DESIGN.md and tests/autograd/test_tensor.py);
  PyTorch promotes them.
- ``True ** bool_tensor`` gives int64 ones in minires; PyTorch has no bool ``pow`` kernel.

``//`` and ``%`` have their own tables, zero divisors and signs included
(tests/ops/test_arith_floordiv_remainder.py). ``@`` is not in the tables: PyTorch's
matmul wants one dtype, minires joins an integer operand to the floating one
(tests/test_outside_bad_input.py).
"""

import itertools
import operator

import numpy as np
import pytest

import minires as mr
from tests.torch_parity import DEFAULT_TOLERANCES, _compare

torch = pytest.importorskip("torch")

DTYPES = ["bool", "uint8", "int32", "int64", "float32", "float64"]
NUMBERS = [True, False, 2, -2, 1.5, 0.25, np.float64(1.5), np.float32(2.5), np.int64(3), np.bool_(True)]
OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
       "pow": operator.pow}
VALUES = {"bool": [True, False, True], "uint8": [0, 1, 3], "int32": [0, 1, 3], "int64": [0, 1, 3],
          "float32": [0.5, 1.5, 3.0], "float64": [0.5, 1.5, 3.0]}


def _both(dtype, shape=(3,)):
    """The same values as a minires tensor and a torch tensor of ``dtype`` and ``shape``."""
    values = np.resize(np.array(VALUES[dtype], dtype=dtype), shape)
    return mr.tensor(values), torch.from_numpy(values.copy())


def _run(fn, *args):
    try:
        with np.errstate(all="ignore"):  # 0 division and overflow: inf/NaN on both sides
            return fn(*args), None
    except Exception as error:  # noqa: BLE001  (compared with the other side's outcome)
        return None, error


def _torch_number(number):
    """The number as PyTorch sees it: NumPy scalars count as Python numbers."""
    return number.item() if isinstance(number, np.generic) else number


def _assert_same(case, mine, theirs):
    (out, error), (ref, ref_error) = mine, theirs
    if ref_error is not None:
        assert error is not None, f"{case}: torch raises {ref_error!r}, minires gives {out!r}"
        assert isinstance(error, (TypeError, ValueError)), f"{case}: {error!r}"
        return
    assert error is None, f"{case}: minires raises {error!r}, torch gives {ref!r}"
    ref = ref.detach().numpy()
    assert out.dtype == ref.dtype, f"{case}: dtype {out.dtype}, torch {ref.dtype}"
    if ref.dtype.kind == "f":
        _compare(case, out.numpy(), ref, *DEFAULT_TOLERANCES[np.dtype(ref.dtype)])
    else:
        np.testing.assert_array_equal(out.numpy(), ref, err_msg=case)


@pytest.mark.parametrize("reverse", [False, True], ids=["tensor_op_number", "number_op_tensor"])
@pytest.mark.parametrize("number", NUMBERS, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_and_number_match_torch(dtype, number, reverse):
    mine, theirs = _both(dtype)
    for name, op in OPS.items():
        if reverse and name == "pow" and dtype == "bool" and isinstance(number, (bool, np.bool_)):
            continue  # True ** bool_tensor: int64 in minires, no bool pow kernel in PyTorch
        case = f"{number!r} {name} {dtype}" if reverse else f"{dtype} {name} {number!r}"
        if reverse:
            mine_result = _run(lambda t: op(number, t), mine)
            torch_result = _run(lambda t: op(_torch_number(number), t), theirs)
        else:
            mine_result, torch_result = _run(op, mine, number), _run(op, theirs, _torch_number(number))
        _assert_same(case, mine_result, torch_result)


@pytest.mark.parametrize("shapes", [((3,), ()), ((), (3,)), ((2, 3), (3,)), ((), ())], ids=str)
@pytest.mark.parametrize("dtype_a,dtype_b", list(itertools.product(DTYPES, DTYPES)))
def test_tensor_and_tensor_match_torch(dtype_a, dtype_b, shapes):
    (a, ta), (b, tb) = _both(dtype_a, shapes[0]), _both(dtype_b, shapes[1])
    refused = (dtype_a != dtype_b and dtype_a.startswith("float") and dtype_b.startswith("float")
               and (a.ndim == 0) == (b.ndim == 0))
    for name, op in OPS.items():
        if name == "pow":
            continue  # minires' ``**`` takes a Python-number exponent
        case = f"{dtype_a}{shapes[0]} {name} {dtype_b}{shapes[1]}"
        if refused:  # minires' deliberate choice: mixed floats of the same rank class do not mix
            with pytest.raises(TypeError, match=f"{dtype_a} and {dtype_b}|{dtype_b} and {dtype_a}"):
                op(a, b)
            continue
        _assert_same(case, _run(op, a, b), _run(op, ta, tb))


def test_known_cases_from_the_issue():
    ints = mr.tensor([1, 2, 3])
    assert (ints * 1.5).dtype == np.float32
    assert (1.5 * ints).dtype == np.float32
    assert (ints / 2).dtype == np.float32
    assert (ints ** 0.5).dtype == np.float32
    assert (mr.tensor(np.array([1, 2], np.int32)) + 1).dtype == np.int32
    assert (mr.tensor([True, False]) + 1).dtype == np.int64
    assert (mr.tensor([1.0]) + mr.tensor(2.0, dtype="float64")).dtype == np.float32
    assert (mr.tensor([1.0], dtype="float64") * 1.5).dtype == np.float64
    assert (ints > 1.5).dtype == np.bool_  # comparisons stay boolean
    assert (ints // 2).dtype == np.int64 and (ints // 1.5).dtype == np.float32  # floor division promotes alike


NUMBER_GRAD_OPS = {**OPS, "rsub": lambda t, n: n - t, "rtruediv": lambda t, n: n / t, "rpow": lambda t, n: n ** t}


@pytest.mark.parametrize("number", [1.5, 2, np.float32(2.5), True], ids=repr)
@pytest.mark.parametrize("name", list(NUMBER_GRAD_OPS))
def test_float64_tensor_with_number_gradcheck(name, number, rng):
    if name in ("sub", "rsub") and isinstance(number, bool):
        pytest.skip("subtraction with a bool refuses (PyTorch's rule)")
    x = mr.tensor(rng.uniform(0.5, 2.0, (2, 3)), requires_grad=True)
    out = NUMBER_GRAD_OPS[name](x, number)
    assert out.dtype == np.float64
    assert mr.gradcheck(lambda t: NUMBER_GRAD_OPS[name](t, number), [x])


@pytest.mark.parametrize("name", ["add", "sub", "mul", "truediv"])
def test_float64_zero_dim_with_integer_tensor_gradcheck(name):
    op = OPS[name]
    ints = mr.tensor([[1, 2, 3], [4, 5, 6]])
    scale = mr.tensor(np.float64(0.75), requires_grad=True)
    assert op(ints, scale).dtype == np.float64 and op(scale, ints).dtype == np.float64
    assert mr.gradcheck(lambda s: op(ints, s), [scale])
    assert mr.gradcheck(lambda s: op(s, ints), [scale])


@pytest.mark.parametrize("name", ["add", "sub", "mul", "truediv"])
def test_float32_tensor_with_float64_zero_dim_gradients_match_torch(name, rng):
    op = OPS[name]
    x_values, s_value = rng.uniform(0.5, 2.0, (2, 3)).astype(np.float32), np.float64(1.25)
    cotangent = rng.standard_normal((2, 3)).astype(np.float32)
    for order in (lambda x, s: op(x, s), lambda x, s: op(s, x)):
        x, s = mr.tensor(x_values, requires_grad=True), mr.tensor(s_value, requires_grad=True)
        tx, ts = torch.tensor(x_values, requires_grad=True), torch.tensor(s_value, requires_grad=True)
        out, ref = order(x, s), order(tx, ts)
        out.backward(cotangent)
        ref.backward(torch.from_numpy(cotangent))
        _assert_same(name, (out, None), (ref, None))
        assert x.grad.dtype == np.float32 and s.grad.dtype == np.float64
        _compare(f"{name} x.grad", x.grad, tx.grad.numpy(), *DEFAULT_TOLERANCES[np.dtype(np.float32)])
        _compare(f"{name} s.grad", s.grad, ts.grad.numpy(), 2e-6, 1e-6)  # summed in float32 on both sides
