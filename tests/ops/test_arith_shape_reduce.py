"""arith, shape and reduce ops: NumPy references, float64 gradchecks, PyTorch parity."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F


def t64(rng, *shape, positive=False):
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return mr.tensor(a, requires_grad=True)


BINARY = [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b),
]
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 2))]


@pytest.mark.parametrize("name,op", BINARY)
@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_binary_broadcast_gradcheck(name, op, sa, sb, rng):
    a = t64(rng, *sa)
    b = t64(rng, *sb, positive=True)
    assert mr.gradcheck(op, [a, b])
    np.testing.assert_allclose(op(a, b).data, op(a.data, b.data))


@pytest.mark.parametrize("fn,positive", [
    (lambda a: -a, False), (lambda a: a ** 3, False), (lambda a: a ** 0.5, True), (lambda a: a.exp(), False),
    (lambda a: a.log(), True), (lambda a: a.sqrt(), True), (lambda a: a.abs(), True),
])
def test_unary_gradcheck(fn, positive, rng):
    assert mr.gradcheck(fn, [t64(rng, 3, 5, positive=positive)])


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((4,), (4, 2)), ((3, 4), (4,)), ((4,), (4,)),
                                   ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((1, 3, 4), (2, 4, 2))])
def test_matmul_gradcheck_and_reference(sa, sb, rng):
    a, b = t64(rng, *sa), t64(rng, *sb)
    np.testing.assert_allclose((a @ b).data, a.data @ b.data)
    assert mr.gradcheck(lambda x, y: x @ y, [a, b])


def test_shape_ops_gradcheck(rng):
    x = t64(rng, 2, 3, 4)
    assert mr.gradcheck(lambda t: t.reshape(4, -1), [x])
    assert mr.gradcheck(lambda t: t.transpose(0, 2), [x])
    assert mr.gradcheck(lambda t: t.permute(1, 2, 0), [x])
    assert mr.gradcheck(lambda t: F.flatten(t), [x])
    assert mr.gradcheck(lambda t: t[:, 1:, ::2], [x])
    assert mr.gradcheck(lambda t: t[..., None, 0], [x])
    assert mr.gradcheck(lambda t: t[[0, 0, 1]], [x])  # repeated rows accumulate
    assert mr.gradcheck(lambda t: t[t.data > 0], [x])
    assert mr.gradcheck(lambda t: F.pad(t, (1, 2, 0, 1)), [x])
    y = t64(rng, 2, 5, 4)
    assert mr.gradcheck(lambda a, b: F.cat([a, b, a], axis=1), [x, y])
    assert mr.gradcheck(lambda a: F.stack([a, a * 2], axis=1), [x])


def test_reductions_gradcheck_and_reference(rng):
    x = t64(rng, 2, 3, 4)
    for axis in [None, 0, (0, 2), -1]:
        for keepdims in [False, True]:
            np.testing.assert_allclose(x.sum(axis, keepdims).data, x.data.sum(axis=axis, keepdims=keepdims))
            np.testing.assert_allclose(x.mean(axis, keepdims).data, x.data.mean(axis=axis, keepdims=keepdims))
            assert mr.gradcheck(lambda t: t.sum(axis, keepdims), [x])
            assert mr.gradcheck(lambda t: t.mean(axis, keepdims), [x])
            assert mr.gradcheck(lambda t: t.max(axis, keepdims), [x])


def test_pad_matches_torch_convention():
    x = mr.tensor(np.arange(6, dtype=np.float32).reshape(1, 2, 3))
    out = F.pad(x, (1, 0, 0, 2), value=-1).numpy()
    assert out.shape == (1, 4, 4)
    assert out[0, 0].tolist() == [-1, 0, 1, 2]
    assert out[0, 3].tolist() == [-1, -1, -1, -1]


@pytest.mark.parametrize("call,message", [
    (lambda: mr.tensor(np.ones(6)).reshape(4, 2), "cannot reshape"),
    (lambda: mr.tensor(np.ones((2, 3))).sum(axis=2), "out of range"),
    (lambda: F.cat([mr.tensor(np.ones((2, 3))), mr.tensor(np.ones((3, 3)))], axis=1), "differ outside"),
    (lambda: F.cat([], axis=0), "non-empty"),
    (lambda: F.pad(mr.tensor(np.ones(3)), (1,)), "even number"),
    (lambda: mr.tensor(np.ones((2, 3))).permute(0, 0), "permutation"),
])
def test_bad_shapes_give_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_nan_propagates():
    x = mr.tensor([np.nan, 1.0], requires_grad=True)
    y = (x * 2).sum()
    y.backward()
    assert np.isnan(y.item())


# --- PyTorch parity ------------------------------------------------------------------

CASES = [
    ("add", lambda m, a, b: m(a) + m(b), [(2, 3, 4), (3, 1)]),
    ("mul", lambda m, a, b: m(a) * m(b), [(2, 3, 4), (4,)]),
    ("div", lambda m, a, b: m(a) / (m(b) * m(b) + 1), [(2, 3), (2, 3)]),
    ("matmul", lambda m, a, b: m(a) @ m(b), [(2, 3, 4), (4, 5)]),
    ("pow", lambda m, a: m(a) ** 3, [(3, 4)]),
    ("exp", lambda m, a: m(a).exp(), [(3, 4)]),
    ("sum", lambda m, a: m(a).sum(1), [(3, 4)]),
    ("mean", lambda m, a: m(a).mean((0, 2)), [(2, 3, 4)]),
    ("max", lambda m, a: m(a).max(1), [(3, 4)]),
    ("index", lambda m, a: m(a)[1:, [0, 2, 2]], [(3, 4)]),
    ("permute", lambda m, a: m(a).permute(2, 0, 1), [(2, 3, 4)]),
]


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("name,fn,shapes", CASES)
def test_torch_parity(name, fn, shapes, dtype, tol, rng):
    torch = pytest.importorskip("torch")
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [mr.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]

    def torch_wrap(t):
        return t

    out_m = fn(lambda t: t, *ours)
    if name == "max":
        out_t = theirs[0].max(1).values
    elif name == "mean":
        out_t = theirs[0].mean((0, 2))
    elif name == "sum":
        out_t = theirs[0].sum(1)
    else:
        out_t = fn(torch_wrap, *theirs)
    np.testing.assert_allclose(out_m.numpy(), out_t.detach().numpy(), rtol=tol, atol=tol)
    cot = rng.standard_normal(out_m.shape).astype(dtype)
    out_m.backward(cot)
    out_t.backward(torch.tensor(cot))
    for m, t in zip(ours, theirs):
        np.testing.assert_allclose(m.grad, t.grad.numpy(), rtol=tol, atol=tol)
