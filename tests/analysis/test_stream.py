"""trace_residual_stream and preact_decomposition on tiny hand-built blocks (float64)."""

import numpy as np
import pytest

import minires as mr
from minires import analysis

from .tiny import batch, tiny_net

SPECS = [(3, 3, 1, "identity"), (3, 4, 2, "A"), (4, 4, 1, "scaled"), (4, 6, 2, "B"), (6, 6, 1, None)]


def _loss_fn(net, y):
    return lambda inp: mr.functional.cross_entropy(net(inp), y)


def test_identity_and_chaining_on_every_shortcut_kind():
    net = tiny_net(SPECS)
    x, y = batch()
    records = analysis.trace_residual_stream(net, x, y)
    assert [r.name for r in records] == [f"layers.{i}" for i in range(5)]
    assert [r.kind for r in records] == ["original"] * 4 + ["plain"]
    for r in records:
        np.testing.assert_allclose(r.skip_term + r.branch_term, r.grad_in, rtol=1e-12, atol=1e-15)
        assert r.identity_error < 1e-12
    for prev, nxt in zip(records, records[1:]):
        np.testing.assert_array_equal(prev.grad_out, nxt.grad_in)
        np.testing.assert_array_equal(prev.x.shape[0], nxt.x.shape[0])


def test_skip_terms_are_the_shortcut_adjoints():
    net = tiny_net(SPECS)
    x, y = batch()
    r = analysis.trace_residual_stream(net, x, y)
    g0 = r[0].grad_pre
    np.testing.assert_array_equal(r[0].skip_term, g0)  # identity: S^T g = g
    np.testing.assert_allclose(r[2].skip_term, 0.7 * r[2].grad_pre, rtol=1e-15)  # scaled identity
    # option A: subsample by 2 and zero-pad 3 -> 4 channels (0 before, 1 after): the adjoint
    # takes channels 0..2 of g and scatters them back to the even positions
    expected = np.zeros_like(r[1].x)
    expected[:, :, ::2, ::2] = r[1].grad_pre[:, 0:3]
    np.testing.assert_array_equal(r[1].skip_term, expected)
    np.testing.assert_array_equal(r[4].skip_term, np.zeros_like(r[4].x))  # plain block
    np.testing.assert_array_equal(r[4].branch_term, r[4].grad_in)
    # g = dL/dy * 1[pre > 0] for the post-add ReLU
    for rec in r:
        passed = rec.grad_pre == rec.grad_out
        blocked = rec.grad_pre == 0
        assert np.all(passed | blocked)
        assert np.all(rec.grad_out != 0)  # so a zero in grad_pre means a blocked unit
        assert rec.blocked_fraction == pytest.approx(blocked.mean())
        assert 0.1 < rec.blocked_fraction < 0.9


def test_branch_term_matches_a_finite_difference_directional_derivative():
    # <(dF/dx)^T g, v> = d/dh <F(x + h v), g>: an independent check of the branch VJP
    net = tiny_net(SPECS)
    x, y = batch()
    records = analysis.trace_residual_stream(net, x, y)
    rng = np.random.default_rng(3)
    for index in (0, 3):
        rec = records[index]
        block = net.layers[index]
        v = rng.standard_normal(rec.x.shape)
        h = 1e-6
        with mr.no_grad():
            fp = block.residual_branch(mr.tensor(rec.x + h * v)).numpy()
            fm = block.residual_branch(mr.tensor(rec.x - h * v)).numpy()
            sp = block.shortcut_path(mr.tensor(rec.x + h * v)).numpy()
            sm = block.shortcut_path(mr.tensor(rec.x - h * v)).numpy()
        numeric_branch = ((fp - fm) / (2 * h) * rec.grad_pre).sum()
        numeric_skip = ((sp - sm) / (2 * h) * rec.grad_pre).sum()
        assert (rec.branch_term * v).sum() == pytest.approx(numeric_branch, rel=1e-6, abs=1e-9)
        assert (rec.skip_term * v).sum() == pytest.approx(numeric_skip, rel=1e-6, abs=1e-9)


def test_grad_in_of_first_block_matches_finite_differences_of_the_loss():
    net = tiny_net(SPECS[:2])
    x, y = batch()
    records = analysis.trace_residual_stream(net, x, y)
    block_input = records[0].x
    rng = np.random.default_rng(5)
    v = rng.standard_normal(block_input.shape)

    def loss_from_block_input(z):
        out = net.layers(z)
        out = mr.functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return float(mr.functional.cross_entropy(net.fc(out), y).item())

    h = 1e-6
    with mr.no_grad():
        numeric = (loss_from_block_input(mr.tensor(block_input + h * v))
                   - loss_from_block_input(mr.tensor(block_input - h * v))) / (2 * h)
    assert (records[0].grad_in * v).sum() == pytest.approx(numeric, rel=1e-6)


def test_trace_leaves_model_untouched():
    net = tiny_net(SPECS)
    x, y = batch()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    for p in net.parameters():
        p.grad = None
    out_before = net.eval()(x).numpy()
    net.train()
    analysis.trace_residual_stream(net, x, y)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(before[k]), err_msg=k)
    assert all(p.grad is None for p in net.parameters())
    assert "forward" not in vars(net.layers[0])
    np.testing.assert_array_equal(net.eval()(x).numpy(), out_before)


def test_stats_only_mode_and_eval_mode():
    net = tiny_net(SPECS)
    x, y = batch()
    full = analysis.trace_residual_stream(net, x, y)
    light = analysis.trace_residual_stream(net, x, y, keep_tensors=False)
    assert light[0].grad_in is None
    for a, b in zip(full, light):
        assert a.norms == pytest.approx(b.norms)
        assert a.ratio == pytest.approx(b.ratio)
    net.eval()
    for r in analysis.trace_residual_stream(net, x, y):
        np.testing.assert_allclose(r.skip_term + r.branch_term, r.grad_in, rtol=1e-12, atol=1e-15)


def test_errors_are_clear():
    x, y = batch()
    with pytest.raises(ValueError, match="no residual or plain blocks"):
        analysis.trace_residual_stream(mr.nn.Sequential(mr.nn.Conv2d(2, 2, 3)), x, y)
    with pytest.raises(TypeError, match="floating input"):
        analysis.trace_residual_stream(tiny_net(SPECS), np.zeros((2, 2, 6, 6), dtype=np.int64), y)


def test_preact_eq5_decomposition_adds_up():
    specs = [(3, 3, 1, "identity"), (3, 3, 1, "identity"), (3, 3, 1, "identity"), (3, 4, 2, "A"),
             (4, 4, 1, "identity"), (4, 4, 1, "identity")]
    net = tiny_net(specs, preact=True)
    x, y = batch()
    terms = analysis.preact_decomposition(net, x, y)
    assert [t.name for t in terms] == ["layers.0", "layers.1", "layers.2", "layers.4", "layers.5"]
    assert [t.end for t in terms] == ["layers.3", "layers.3", "layers.3", "output", "output"]
    assert [t.blocks for t in terms] == [3, 2, 1, 2, 1]
    for t in terms:
        np.testing.assert_allclose(t.direct_term + t.residual_term, t.grad_in, rtol=1e-10, atol=1e-14)
        assert t.error < 1e-10
        assert t.norms["residual"] > 0
    # the direct term is the same dL/dx_L for every block of one identity run
    np.testing.assert_array_equal(terms[0].direct_term, terms[2].direct_term)
    # for the last block of a run, the residual term is that block's branch term
    records = analysis.trace_residual_stream(net, x, y)
    np.testing.assert_allclose(terms[2].residual_term, records[2].branch_term, rtol=1e-12, atol=1e-15)


def test_preact_decomposition_refuses_original_blocks():
    x, y = batch()
    with pytest.raises(ValueError, match="pre-activation"):
        analysis.preact_decomposition(tiny_net(SPECS), x, y)
