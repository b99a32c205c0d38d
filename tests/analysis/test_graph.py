"""``vjp`` and ``OpTape`` leave the graph, ``Function.apply`` and other threads alone."""

import threading

import numpy as np
import pytest

import minires as mr
from minires.analysis import OpTape, tangent_of, vjp
from minires.autograd import Function


def _graph():
    rng = np.random.default_rng(0)
    w = mr.tensor(rng.standard_normal((3, 3)), requires_grad=True)
    x0 = mr.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    x = x0 @ w  # an inner tensor
    y = (x * x + x @ w).relu()
    return x0, w, x, y


def test_vjp_does_not_touch_the_inputs_op_or_grads():
    x0, w, x, y = _graph()
    ctx = x.grad_fn
    seen = []
    # while the traversal runs, the input still has its op
    y.register_hook(lambda g: seen.append(x.grad_fn))
    g = np.ones(y.shape)
    gx = vjp(y, g, x, guard=[w])
    assert seen == [ctx] and x.grad_fn is ctx
    assert x.grad is None and w.grad is None and x0.grad is None
    # the same VJP by an explicit backward from x
    mask = (x.data * x.data + x.data @ w.data) > 0
    expected = 2 * x.data * mask + (mask * g) @ w.data.T
    np.testing.assert_allclose(gx, expected, rtol=1e-12)
    # the graph is kept: a second VJP and a full backward still work
    np.testing.assert_array_equal(vjp(y, g, x), gx)
    y.sum().backward()
    assert x0.grad is not None


def test_vjp_of_an_input_itself_and_an_unreached_input():
    x0, w, x, y = _graph()
    g = np.full(x.shape, 2.0)
    np.testing.assert_array_equal(vjp(x, g, x), g)
    other = mr.tensor(np.ones(4), requires_grad=True) * 2.0
    np.testing.assert_array_equal(vjp(y, np.ones(y.shape), other), np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        vjp(y, np.ones(3), x)


def test_op_tape_does_not_patch_apply_and_ignores_other_threads():
    before = Function.__dict__["apply"]
    go = threading.Event()
    other = []

    def work():
        go.wait(5)
        t = mr.tensor(np.ones(3), requires_grad=True)
        other.extend(t * 2.0 for _ in range(20))

    thread = threading.Thread(target=work)
    thread.start()
    x = mr.tensor(np.arange(3.0), requires_grad=True)
    with OpTape() as tape:
        assert Function.__dict__["apply"] is before
        go.set()
        y = (x * x).sum()
        thread.join()
    assert Function.__dict__["apply"] is before
    recorded = {id(entry[3]) for entry in tape.entries}
    assert id(y) in recorded and not any(id(o) in recorded for o in other)
    assert tangent_of(tape, {id(x): np.ones(3)}, y) == pytest.approx(2 * np.arange(3.0).sum())


def test_op_tapes_nest_but_a_tape_is_not_reentered():
    x = mr.tensor(np.ones(2), requires_grad=True)
    with OpTape() as outer:
        with OpTape() as inner:
            y = x * 3.0
            with pytest.raises(RuntimeError, match="already recording"):
                with inner:
                    pass
    assert [e[3] for e in inner.entries] == [y] and y in [e[3] for e in outer.entries]
    with inner:  # entered again after it stopped: it goes on appending
        z = y + 1.0
    assert [e[3] for e in inner.entries] == [y, z]
