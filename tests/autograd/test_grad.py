"""``minires.autograd.grad`` against ``torch.autograd.grad`` (float64, small graphs)."""

import threading

import numpy as np
import pytest

import minires as mr
from minires.autograd import grad

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

RNG = np.random.default_rng(0)
A0 = RNG.standard_normal((3, 4))
W0 = RNG.standard_normal((4, 2))


def build(lib):
    """The same graph in minires and in torch: a -> b -> (c, d) with a shared weight."""
    new = mr.tensor if lib is mr else (lambda x, requires_grad: torch.tensor(x, requires_grad=requires_grad))
    a = new(A0.copy(), requires_grad=True)
    w = new(W0.copy(), requires_grad=True)
    b = a * 1.5 + a * a  # non-leaf on the path
    c = (b @ w).relu() if lib is mr else torch.relu(b @ w)
    d = (b * b).sum()
    return a, w, b, c, d


def close(mine, theirs):
    assert len(mine) == len(theirs)
    for m, t in zip(mine, theirs):
        if t is None:
            assert m is None
        else:
            assert isinstance(m, mr.Tensor) and not m.requires_grad
            np.testing.assert_allclose(m.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_scalar_output_leaf_inputs_and_grad_untouched():
    a, w, b, c, d = build(mr)
    ta, tw, tb, tc, td = build(torch)
    loss, tloss = c.sum() + d, tc.sum() + td
    close(grad(loss, [a, w]), torch.autograd.grad(tloss, [ta, tw]))
    assert a.grad is None and w.grad is None


def test_non_leaf_input_stops_there_and_nested_inputs_get_total_gradients():
    a, w, b, c, d = build(mr)
    ta, tw, tb, tc, td = build(torch)
    close(grad(d, b, retain_graph=True), torch.autograd.grad(td, tb, retain_graph=True))
    # b lies between d and a: a's gradient is the total one, through b
    close(grad(d, [a, b]), torch.autograd.grad(td, [ta, tb]))
    assert a.grad is None and b.grad is None


def test_several_outputs_with_grad_outputs():
    a, w, b, c, d = build(mr)
    ta, tw, tb, tc, td = build(torch)
    g = RNG.standard_normal(c.shape)
    mine = grad([c, d], [a, w, b], grad_outputs=[g, None])
    theirs = torch.autograd.grad([tc, td], [ta, tw, tb], grad_outputs=[torch.tensor(g), None])
    close(mine, theirs)
    assert isinstance(mine, tuple)


def test_an_output_that_is_an_input_passes_its_gradient_through():
    a, w, b, c, d = build(mr)
    g = RNG.standard_normal(b.shape)
    (gb,) = grad(b, b, grad_outputs=g)
    np.testing.assert_array_equal(gb.numpy(), g)


def test_implicit_grad_only_for_scalar_outputs_and_shapes_are_checked():
    a, w, b, c, d = build(mr)
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        grad(c, a)
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        grad([c, d], a, grad_outputs=[None, None])
    with pytest.raises(RuntimeError, match="shape"):
        grad(c, a, grad_outputs=np.ones((2, 2)))
    with pytest.raises(ValueError, match="one grad_output per output"):
        grad([c, d], a, grad_outputs=[None])


def test_unused_inputs_raise_unless_allowed():
    a, w, b, c, d = build(mr)
    ta, tw, tb, tc, td = build(torch)
    with pytest.raises(RuntimeError, match="appears to not have been used in the graph"):
        grad(d, [a, w], retain_graph=True)
    close(grad(d, [a, w], allow_unused=True), torch.autograd.grad(td, [ta, tw], allow_unused=True))


def test_inputs_and_outputs_must_require_grad():
    a, w, b, c, d = build(mr)
    with pytest.raises(RuntimeError, match="does not require grad"):
        grad(d, mr.tensor([1.0]))
    with pytest.raises(RuntimeError, match="does not require grad"):
        grad(mr.tensor(1.0), a)


def test_retain_graph_defaults_to_false_and_frees_buffers():
    a, w, b, c, d = build(mr)
    grad(d, a)
    with pytest.raises(RuntimeError, match="retain_graph"):
        grad(d, a)
    a, w, b, c, d = build(mr)
    first = grad(d, a, retain_graph=True)
    second = grad(d, a)
    np.testing.assert_array_equal(first[0].numpy(), second[0].numpy())


def test_only_the_ops_between_outputs_and_inputs_run_and_are_freed():
    # as in torch: the graph below the inputs is neither run nor freed
    a = mr.tensor([1.0, 2.0], requires_grad=True)
    b = a * 3
    d = (b * b).sum()
    grad(d, b)
    assert not b.grad_fn.released
    (ga,) = grad(b.sum(), a)
    np.testing.assert_array_equal(ga.numpy(), [3.0, 3.0])


def test_hooks_run_as_in_torch():
    a, w, b, c, d = build(mr)
    ta, tw, tb, tc, td = build(torch)
    seen, tseen = [], []
    b.register_hook(lambda g: g * 10)
    tb.register_hook(lambda g: g * 10)
    a.register_hook(lambda g: seen.append(g.numpy().copy()))
    ta.register_hook(lambda g: tseen.append(g.numpy().copy()))
    close(grad(d, b, retain_graph=True), torch.autograd.grad(td, tb, retain_graph=True))
    assert seen == [] and tseen == []  # a is not on a path from d to b
    close(grad(d, a), torch.autograd.grad(td, ta))
    assert len(seen) == len(tseen) == 1
    np.testing.assert_allclose(seen[0], tseen[0], rtol=1e-12)


def test_retain_grad_tensors_on_the_path_get_their_grad_as_in_torch():
    a, w, b, c, d = build(mr)
    ta, tw, tb, tc, td = build(torch)
    b.retain_grad()
    tb.retain_grad()
    grad(d, a)
    torch.autograd.grad(td, ta)
    np.testing.assert_allclose(b.grad, tb.grad.numpy(), rtol=1e-12)
    assert a.grad is None and ta.grad is None


def test_backward_is_unchanged_by_a_grad_call():
    a, w, b, c, d = build(mr)
    loss = c.sum() + d
    (ga, gw) = grad(loss, [a, w], retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(a.grad, ga.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.grad, gw.numpy(), rtol=1e-12)


def test_grad_from_two_threads_on_one_graph():
    a, w, b, c, d = build(mr)
    loss = c.sum() + d
    (expected,) = grad(loss, a, retain_graph=True)
    results, errors = [], []

    def work():
        try:
            for _ in range(20):
                results.append(grad(loss, a, retain_graph=True)[0].numpy())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, expected.numpy())
