"""Forward hooks, forward pre-hooks and full backward hooks (values and torch parity)."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
import minires.nn as nn


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def test_forward_pre_hook_and_forward_hook_replace_and_remove():
    m = Scale(2.0)
    calls = []
    pre = m.register_forward_pre_hook(lambda mod, args: (args[0] + 1,))
    post = m.register_forward_hook(lambda mod, args, out: calls.append((mod, args[0].numpy(), out.numpy())))
    out = m(mr.tensor([1.0, 2.0]))
    np.testing.assert_array_equal(out.numpy(), [4.0, 6.0])
    assert calls[0][0] is m
    np.testing.assert_array_equal(calls[0][1], [2.0, 3.0])  # the hook sees the pre-hook's args
    pre.remove()
    post.remove()
    post.remove()  # a second remove is a no-op
    np.testing.assert_array_equal(m(mr.tensor([1.0])).numpy(), [2.0])
    assert len(calls) == 1
    # a non-None return of a forward hook replaces the output; a bare tensor from a pre-hook too
    with m.register_forward_hook(lambda mod, args, out: out * 10):
        np.testing.assert_array_equal(m(mr.tensor([1.0])).numpy(), [20.0])
    np.testing.assert_array_equal(m(mr.tensor([1.0])).numpy(), [2.0])  # removed on leaving the block
    with m.register_forward_pre_hook(lambda mod, args: args[0] * 0):
        np.testing.assert_array_equal(m(mr.tensor([1.0])).numpy(), [0.0])


def test_hook_order_prepend_and_kwargs():
    m = Scale(1.0)
    order = []
    m.register_forward_hook(lambda *a: order.append("first"))
    m.register_forward_hook(lambda *a: order.append("prepended"), prepend=True)
    m.register_forward_hook(lambda mod, args, kwargs, out: order.append(("kw", kwargs)), with_kwargs=True)
    m(mr.tensor([1.0]))
    assert order == ["prepended", "first", ("kw", {})]
    with pytest.raises(TypeError, match="callable"):
        m.register_forward_hook(3)


def test_forward_hooks_collect_activations_of_every_layer():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    shapes = {}
    handles = [mod.register_forward_hook(lambda mod, args, out, name=name: shapes.__setitem__(name, out.shape))
               for name, mod in net.named_children()]
    net(mr.randn(5, 3))
    assert shapes == {"0": (5, 4), "1": (5, 4), "2": (5, 2)}
    for h in handles:
        h.remove()


def test_full_backward_hook_equals_manual_gradients():
    fc = nn.Linear(3, 2)
    seen = []
    fc.register_full_backward_hook(lambda mod, gi, go: seen.append((gi, go)))
    x = mr.randn(4, 3, requires_grad=True)
    out = fc(x)
    g = mr.randn(4, 2)
    out.backward(g)
    assert len(seen) == 1
    grad_input, grad_output = seen[0]
    assert isinstance(grad_input, tuple) and isinstance(grad_output, tuple)
    assert len(grad_input) == 1 and len(grad_output) == 1
    np.testing.assert_allclose(grad_output[0].numpy(), g.numpy())
    np.testing.assert_allclose(grad_input[0].numpy(), g.numpy() @ fc.weight.numpy(), rtol=1e-6)
    np.testing.assert_allclose(x.grad, g.numpy() @ fc.weight.numpy(), rtol=1e-6)
    # parameter gradients are unaffected by the hook machinery
    np.testing.assert_allclose(fc.weight.grad, g.numpy().T @ x.numpy(), rtol=1e-5)


def test_backward_hook_without_input_grad_gets_none_and_runs_at_output():
    fc = nn.Linear(3, 2)
    seen = []
    fc.register_full_backward_hook(lambda mod, gi, go: seen.append((gi, go)))
    fc(mr.randn(4, 3)).sum().backward()  # input does not require grad
    (grad_input, grad_output), = seen
    assert grad_input == (None,)
    np.testing.assert_array_equal(grad_output[0].numpy(), np.ones((4, 2), np.float32))
    assert fc.weight.grad is not None


def test_backward_hook_replaces_grad_input_and_pre_hook_replaces_grad_output():
    m = Scale(3.0)
    h = m.register_full_backward_hook(lambda mod, gi, go: (gi[0] * 2,))
    x = mr.ones(2, requires_grad=True)
    m(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    h.remove()
    m.register_full_backward_pre_hook(lambda mod, go: (go[0] * 0.5,))
    x = mr.ones(2, requires_grad=True)
    m(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.5, 1.5])
    m2 = Scale(1.0)
    m2.register_full_backward_hook(lambda mod, gi, go: (gi[0], gi[0]))
    with pytest.raises(RuntimeError, match="returned 2 gradients, expected 1"):
        m2(mr.ones(2, requires_grad=True)).sum().backward()


def test_no_backward_hook_wiring_under_no_grad():
    fc = nn.Linear(2, 2)
    seen = []
    fc.register_full_backward_hook(lambda *a: seen.append(a))
    with mr.no_grad():
        out = fc(mr.randn(1, 2, requires_grad=True))
    assert not out.requires_grad and seen == []


class TwoInputs(object):
    """Builds the same two-input, two-output module in minires and torch."""

    @staticmethod
    def forward(lib_mul, a, b, scale, c):
        # c is used only for the second output; scale is not a tensor
        return (a * b + a * scale, lib_mul(c, c))


def _torch_block(torch):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(3)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x))) + x

    return Block()


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x))) + x


def _record(store, key):
    def hook(module, grad_input, grad_output):
        store[key] = (grad_input, grad_output)
    return hook


def _as_np(grads):
    return [None if g is None else (g.numpy() if hasattr(g, "numpy") else g) for g in grads]


def _assert_grads_close(mine, theirs):
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_full_backward_hook_torch_parity_on_residual_block(rng):
    torch = pytest.importorskip("torch")
    mine, theirs = Block().double(), _torch_block(torch).double()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in mine.state_dict().items()})
    store = {}
    for name, module in mine.named_modules():
        module.register_full_backward_hook(_record(store, "mr" + name))
    for name, module in theirs.named_modules():
        module.register_full_backward_hook(_record(store, "torch" + name))
    x = rng.standard_normal((2, 3, 5, 4))
    g = rng.standard_normal((2, 3, 5, 4))
    xm, xt = mr.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    mine(xm).backward(g)
    theirs(xt).backward(torch.from_numpy(g))
    for name in ["", "conv", "bn"]:
        _assert_grads_close(store["mr" + name][0], store["torch" + name][0])
        _assert_grads_close(store["mr" + name][1], store["torch" + name][1])
    np.testing.assert_allclose(xm.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mine.conv.weight.grad, theirs.conv.weight.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_full_backward_hook_torch_parity_multi_input_multi_output(rng):
    torch = pytest.importorskip("torch")

    class Mine(nn.Module):
        def forward(self, a, b, scale, c):
            return TwoInputs.forward(lambda u, v: u * v, a, b, scale, c)

    class Theirs(torch.nn.Module):
        def forward(self, a, b, scale, c):
            return TwoInputs.forward(torch.mul, a, b, scale, c)

    store = {}
    mine, theirs = Mine(), Theirs()
    mine.register_full_backward_hook(_record(store, "mr"))
    theirs.register_full_backward_hook(_record(store, "torch"))
    a, b, c = (rng.standard_normal((3, 2)) for _ in range(3))
    ga = rng.standard_normal((3, 2))
    # b does not require grad; only the first output gets a gradient
    am, bm, cm = mr.tensor(a, requires_grad=True), mr.tensor(b), mr.tensor(c, requires_grad=True)
    at, bt, ct = torch.tensor(a, requires_grad=True), torch.tensor(b), torch.tensor(c, requires_grad=True)
    out_m = mine(am, bm, 2.5, cm)
    out_t = theirs(at, bt, 2.5, ct)
    assert isinstance(out_m, tuple) and len(out_m) == 2
    out_m[0].backward(ga)
    out_t[0].backward(torch.from_numpy(ga))
    gi_m, go_m = store["mr"]
    gi_t, go_t = store["torch"]
    assert len(gi_m) == len(gi_t) == 4 and len(go_m) == len(go_t) == 2
    _assert_grads_close(gi_m, gi_t)  # (grad a, zeros, None, zeros): b, c got no gradient
    _assert_grads_close(go_m, go_t)  # (grad out0, None)
    np.testing.assert_allclose(am.grad, at.grad.numpy(), rtol=1e-12)


def test_full_backward_hook_torch_parity_both_inputs_used_and_replaced(rng):
    torch = pytest.importorskip("torch")

    class Mine(nn.Module):
        def forward(self, a, b):
            return a * b + a

    class Theirs(torch.nn.Module):
        def forward(self, a, b):
            return a * b + a

    store = {}

    def double_first(key):
        def hook(module, grad_input, grad_output):
            store[key] = (grad_input, grad_output)
            return (grad_input[0] * 2, grad_input[1])
        return hook

    mine, theirs = Mine(), Theirs()
    mine.register_full_backward_hook(double_first("mr"))
    theirs.register_full_backward_hook(double_first("torch"))
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    am, bm = mr.tensor(a, requires_grad=True), mr.tensor(b, requires_grad=True)
    at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    # the inputs are also used outside the module: gradients add up
    (mine(am, bm) * 3 + am).sum().backward()
    (theirs(at, bt) * 3 + at).sum().backward()
    _assert_grads_close(store["mr"][0], store["torch"][0])
    _assert_grads_close(store["mr"][1], store["torch"][1])
    np.testing.assert_allclose(am.grad, at.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bm.grad, bt.grad.numpy(), rtol=1e-12)
