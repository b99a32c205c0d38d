import gc
import sys
import weakref

import numpy as np
import pytest

import minires as mr


def test_chain_of_3000_ops_backprops_with_default_recursion_limit():
    limit = sys.getrecursionlimit()
    x = mr.tensor(np.ones(4), requires_grad=True)
    h = x
    for _ in range(3000):
        h = h * 1.0001
    h.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(4, 1.0001 ** 3000), rtol=1e-10)
    assert sys.getrecursionlimit() == limit


def test_gradients_accumulate_into_leaves_across_backwards():
    x = mr.tensor([2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 4).sum().backward()
    assert x.grad.tolist() == [7.0]


def test_shared_subexpression_accumulates():
    x = mr.tensor([3.0], requires_grad=True)
    y = x * x
    z = y + y * x  # x^2 + x^3 -> 2x + 3x^2 = 6 + 27
    z.sum().backward()
    assert x.grad.tolist() == [33.0]


def test_no_grad_records_nothing():
    x = mr.tensor([1.0], requires_grad=True)
    with mr.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None

    @mr.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad
    assert mr.is_grad_enabled()


def test_buffers_are_released_after_backward():
    x = mr.tensor(np.ones(1000, dtype=np.float32), requires_grad=True)
    big = mr.tensor(np.ones(1000, dtype=np.float32))
    y = x * big  # Mul saves both operands
    fn = y.grad_fn
    saved = weakref.ref(fn.__dict__["b"])
    del big
    y.sum().backward()
    gc.collect()
    assert fn.released and saved() is None
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.sum().backward()


def test_retain_graph_allows_a_second_backward():
    x = mr.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [4.0, 8.0]


def test_memory_does_not_grow_across_steps():
    import tracemalloc

    w = mr.tensor(np.random.randn(64, 64).astype(np.float32), requires_grad=True)

    def step():
        x = mr.tensor(np.random.randn(32, 64).astype(np.float32))
        loss = ((x @ w).relu() @ w).mean()
        loss.backward()
        w.grad = None

    step()
    tracemalloc.start()
    step()
    first = tracemalloc.get_traced_memory()[0]
    for _ in range(20):
        step()
    grown = tracemalloc.get_traced_memory()[0] - first
    tracemalloc.stop()
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over 20 steps"


def test_register_hook_sees_and_replaces_gradient():
    x = mr.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy().copy()))
    handle = y.register_hook(lambda g: g * 10)
    y.sum().backward()
    np.testing.assert_array_equal(seen[0], [1.0, 1.0])
    np.testing.assert_array_equal(x.grad, [30.0, 30.0])
    handle.remove()
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_retain_grad_keeps_intermediate_gradient():
    x = mr.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    y.retain_grad()
    (y * y).sum().backward()
    np.testing.assert_array_equal(y.grad, [6.0, 12.0])


def test_backward_needs_grad_for_non_scalars_and_checks_its_shape():
    x = mr.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(np.ones(3, dtype=np.float32))
    with pytest.raises(RuntimeError, match="does not require grad"):
        mr.tensor([1.0]).backward()


def test_gradcheck_catches_a_wrong_gradient():
    class WrongSquare(mr.Function):
        def forward(self, a):
            self.a = a
            return a * a

        def backward(self, grad):
            return grad * self.a  # should be 2a

    x = mr.tensor(np.random.rand(3), requires_grad=True)
    with pytest.raises(mr.GradcheckError, match="mismatch"):
        mr.gradcheck(lambda t: WrongSquare.apply(t), [x])
    assert mr.gradcheck(lambda t: t * t, [x])


def test_gradcheck_requires_float64():
    with pytest.raises(TypeError, match="float64"):
        mr.gradcheck(lambda t: t * 2, [mr.tensor([1.0], requires_grad=True)])
