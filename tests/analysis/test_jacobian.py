"""Forward-mode JVPs, explicit Jacobians and power iteration on tiny blocks (float64)."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import analysis

from .tiny import batch, tiny_net

SPECS = [(3, 3, 1, "identity"), (3, 4, 2, "A"), (4, 4, 1, "scaled"), (4, 6, 2, "B"), (6, 6, 1, None)]


def _fd_jvp(fn, x, v, h=1e-6):
    with mr.no_grad():
        return (fn(mr.tensor(x + h * v)).numpy() - fn(mr.tensor(x - h * v)).numpy()) / (2 * h)


@pytest.mark.parametrize("index", [0, 1, 3, 4])
@pytest.mark.parametrize("training", [True, False])
def test_block_jvp_matches_finite_differences(index, training):
    net = tiny_net(SPECS)
    net.train(training)
    block = net.layers[index]
    rng = np.random.default_rng(index)
    x = rng.standard_normal((4, block.cin, 6, 6))
    v = rng.standard_normal(x.shape)
    out, jv = analysis.jvp(block.forward, x, v)
    np.testing.assert_allclose(out.numpy(), block.forward(mr.tensor(x)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(jv, _fd_jvp(block.forward, x, v), rtol=1e-6, atol=1e-8)


def test_jvp_rules_of_elementwise_and_shape_ops():
    rng = np.random.default_rng(0)
    w = mr.tensor(rng.standard_normal((5, 3)))
    w2, b2 = mr.tensor(rng.standard_normal((2, 4))), mr.tensor(np.ones(2))

    def fn(t):
        a = (t * t + 2.0).sqrt().log() / (t.abs() + 1.0)
        b = (t @ w.T).exp() - t.sum(axis=1, keepdims=True) ** 3
        c = F.sigmoid(t).reshape(3, 2).transpose(0, 1).reshape(2, 3)[:, 1:]
        d = F.cat([a, b.max(axis=1, keepdims=True)], axis=1)
        return F.linear(d, w2, b2).mean(axis=0) + c.sum()

    x = rng.standard_normal((2, 3))
    v = rng.standard_normal((2, 3))
    _, jv = analysis.jvp(fn, x, v)
    np.testing.assert_allclose(jv, _fd_jvp(fn, x, v), rtol=1e-6, atol=1e-9)


def test_forward_and_reverse_jacobians_agree_and_power_iteration_finds_the_norm():
    net = tiny_net(SPECS)
    block = net.layers[3]  # projection shortcut, BN in train mode
    x = np.random.default_rng(1).standard_normal((3, 4, 4, 4))
    lin = analysis.Linearization(block.forward, x, list(net.parameters()))
    jac = analysis.jacobian_matrix(lin)
    assert jac.shape == (3 * 6 * 2 * 2, 3 * 4 * 4 * 4)
    np.testing.assert_allclose(analysis.jacobian_matrix(lin, "reverse"), jac, rtol=1e-12, atol=1e-14)
    sigma, history = analysis.spectral_norm(lin, iters=500, tol=1e-12)
    assert sigma == pytest.approx(np.linalg.norm(jac, 2), rel=1e-6)
    assert all(b >= a * (1 - 1e-9) for a, b in zip(history, history[1:]))  # rises monotonically


def test_identity_block_norm_is_one_plus_branch_for_a_zero_branch():
    net = tiny_net(SPECS)
    block = net.layers[0]
    block.bn2.weight.data[...] = 0.0  # F == 0: the residual Jacobian is exactly I
    res = analysis.block_jacobian_norms(net, batch()[0], iters=10)
    assert res[0].branch == pytest.approx(0.0, abs=1e-12)
    assert res[0].residual == pytest.approx(1.0, rel=1e-9)


def test_block_jacobian_norms_against_explicit_jacobians():
    net = tiny_net(SPECS)
    x, _ = batch(n=2, hw=4)
    res = analysis.block_jacobian_norms(net, x, iters=300, tol=1e-12)
    assert [r.kind for r in res] == ["original"] * 4 + ["plain"]
    assert np.isnan(res[4].residual)
    # recompute block 2's norms from explicit Jacobians at the same input
    with analysis.TracedRun(net, x, None, loss=lambda o: o.sum(), backward=False) as run:
        xin = run.calls[2].x.data
    block = net.layers[2]
    for fn, value in ((block.residual_branch, res[2].branch),
                      (lambda t: block.residual_branch(t) + block.shortcut_path(t), res[2].residual),
                      (block.forward, res[2].block)):
        jac = analysis.jacobian_matrix(analysis.Linearization(fn, xin))
        assert value == pytest.approx(np.linalg.norm(jac, 2), rel=1e-5)


def test_unknown_op_is_reported():
    class Odd(mr.Function):
        def forward(self, a):
            return a * 2

        def backward(self, grad):
            return grad * 2

    with pytest.raises(NotImplementedError, match="no rule for op Odd"):
        analysis.jvp(lambda t: Odd.apply(t), np.ones(3), np.ones(3))


def test_shape_checks():
    lin = analysis.Linearization(lambda t: t * 2.0, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"expected a tangent of shape \(2, 3\)"):
        lin.jvp(np.ones(3))
    with pytest.raises(ValueError, match="expected a cotangent"):
        lin.vjp(np.ones(4))
    with pytest.raises(ValueError, match="iters must be >= 1"):
        analysis.spectral_norm(lin, iters=0)


def test_jvp_of_power_zero_is_zero_at_zero():
    # d(a^0)/da = 0 everywhere, also at a = 0 (where p * a^(p-1) would be 0 * inf = NaN)
    import minires as mr
    from minires.analysis.jacobian import jvp
    x = mr.tensor(np.array([0.0, 1.5, -2.0]))
    _, tangent = jvp(lambda a: a ** 0, x, np.ones(3))
    np.testing.assert_array_equal(tangent, np.zeros(3))
    _, tangent = jvp(lambda a: a ** 2, x, np.ones(3))
    np.testing.assert_allclose(tangent, 2 * x.numpy())


def test_jvp_of_remainder_matches_reverse_mode():
    # a % b: tangent da - floor(a/b) db, checked against reverse mode (the VJP's transpose)
    import minires as mr
    from minires.analysis.jacobian import jvp
    rng = np.random.default_rng(0)
    a = rng.uniform(-5, 5, 6)
    b = rng.uniform(0.5, 2, 6) * rng.choice([-1, 1], 6)
    v = rng.standard_normal(6)
    for fn, wrt in ((lambda x: x % mr.tensor(b), "a"), (lambda x: mr.tensor(a) % x, "b")):
        x = mr.tensor(a if wrt == "a" else b, requires_grad=True)
        _, tangent = jvp(fn, x, v)
        out = fn(x)
        rows = []
        for i in range(6):
            e = np.zeros(6)
            e[i] = 1.0
            x.grad = None
            fn(x).backward(mr.tensor(e))
            rows.append(x.grad.numpy() if hasattr(x.grad, "numpy") else x.grad)
        np.testing.assert_allclose(tangent, np.array(rows) @ v, rtol=1e-12, atol=1e-12)
        assert out.shape == (6,)


def test_jvp_through_a_cast_equals_the_vjp():
    # the cast is an op like any other: forward mode sees it (it used to give zeros)
    x = np.random.default_rng(0).standard_normal(4).astype(np.float32)
    v = np.random.default_rng(1).standard_normal(4).astype(np.float32)
    out, jv = analysis.jvp(lambda t: t.double() * 3, x, v)
    assert out.dtype == jv.dtype == np.float64
    np.testing.assert_allclose(jv, 3 * v.astype(np.float64), rtol=1e-7)
    lin = analysis.Linearization(lambda t: t.double() * 3, x)
    np.testing.assert_allclose(analysis.jacobian_matrix(lin, "forward"), 3 * np.eye(4))
    np.testing.assert_allclose(analysis.jacobian_matrix(lin, "reverse"), 3 * np.eye(4))
    assert analysis.spectral_norm(lin)[0] == pytest.approx(3.0, rel=1e-6)
    _, jv = analysis.jvp(lambda t: t.double().float() * 2, x, v)      # float64 -> float32 and back
    np.testing.assert_allclose(jv, 2 * v, rtol=1e-6)


@pytest.mark.parametrize("fn", [lambda t: mr.tensor(t.numpy() * 2.0), lambda t: t.detach() * 2.0,
                                lambda t: (t * 10.0).to("int64").double()],
                         ids=["left-minires", "detached", "through-integers"])
def test_jvp_refuses_an_output_that_does_not_depend_on_the_input(fn):
    x = np.linspace(-1.0, 1.0, 3)
    with pytest.raises(ValueError, match="does not depend on the input through ops minires recorded"):
        analysis.jvp(fn, x, np.ones(3))
    with pytest.raises(ValueError, match="does not depend on the input"):
        analysis.jacobian_matrix(analysis.Linearization(fn, x), "forward")


def test_jvp_of_linear_shape_and_pooling_ops_matches_finite_differences():
    rng = np.random.default_rng(2)

    def fn(t):
        a = F.pad(t, (1, 2, 0, 1), value=3.0)
        b = F.avg_pool2d(a, 2) * 2.0 - F.adaptive_avg_pool2d(a, (2, 3))[:, :, :1, :1]
        c = F.stack([-t, t.permute(0, 1, 3, 2)], axis=0).sum(axis=0)
        return F.cat([F.flatten(b), F.flatten(c) @ mr.tensor(np.ones((32, 3)))], axis=1)

    x, v = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((2, 2, 4, 4))
    _, jv = analysis.jvp(fn, x, v)
    np.testing.assert_allclose(jv, _fd_jvp(fn, x, v), rtol=1e-6, atol=1e-9)


def test_every_op_has_a_forward_mode_rule_except_the_listed_ones():
    import minires.nn  # noqa: F401  (the hook nodes are ops too)
    from minires.autograd import Function

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    without = {cls.__name__ for cls in subclasses(Function)
               if cls.__module__.startswith("minires.") and cls.jvp is Function.jvp}
    assert without == {"FloorDivide", "MaxPool2d", "LogSoftmax", "Softmax", "NLLLoss", "CrossEntropy"}


def test_registered_rules_are_keyed_by_class(monkeypatch):
    from minires.analysis import _graph

    class Twice(mr.Function):
        def forward(self, a):
            return a * 2

        def backward(self, grad):
            return grad * 2

    monkeypatch.setattr(_graph, "_RULES", {})
    with pytest.raises(TypeError, match="expected a Function subclass, got 'Twice'"):
        analysis.register_jvp_rule("Twice", lambda *args: None)
    analysis.register_linear_op(Twice)
    np.testing.assert_array_equal(analysis.jvp(lambda t: Twice.apply(t), np.ones(2), np.arange(2.0))[1], [0, 2])
    analysis.register_jvp_rule(Twice, lambda cls, t, inputs, options, out: 5 * t[0])
    np.testing.assert_array_equal(analysis.jvp(lambda t: Twice.apply(t), np.ones(2), np.arange(2.0))[1], [0, 5])
