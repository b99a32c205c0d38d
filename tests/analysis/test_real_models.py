"""The analysis tools on the real CIFAR models of minires.models (small batches)."""

import numpy as np
import pytest

import minires as mr
from minires import analysis
from minires.models import create



def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return (mr.tensor(rng.standard_normal((n, 3, 32, 32)).astype(np.float32)),
            mr.tensor(rng.integers(0, 10, n)))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet20_skip_plus_branch_is_grad_in_and_blocks_chain(shortcut):
    mr.manual_seed(0)
    net = create("resnet20", shortcut=shortcut)
    x, y = _batch()
    records = analysis.trace_residual_stream(net, x, y)
    assert [r.name for r in records] == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert [r.shortcut_kind for r in records].count(shortcut) == 2  # layer2.0 and layer3.0
    for r in records:
        scale = np.abs(r.grad_in).max()
        assert scale > 0
        np.testing.assert_allclose(r.skip_term + r.branch_term, r.grad_in, rtol=0, atol=1e-5 * scale)
        assert r.norms["skip"] > 0 and r.norms["branch"] > 0 and 0 < r.blocked_fraction < 1
    for prev, nxt in zip(records, records[1:]):
        np.testing.assert_array_equal(prev.grad_out, nxt.grad_in)
    # the engine's dL/dx of the first block equals the gradient a plain backward gives
    # to the stem output: cross-check against the trace's input gradient magnitude ordering
    assert records[0].norms["grad_in"] > records[-1].norms["grad_out"]


def test_plain20_blocks_have_only_a_branch_term():
    mr.manual_seed(0)
    records = analysis.trace_residual_stream(create("plain20"), *_batch())
    assert {r.kind for r in records} == {"plain"}
    for r in records:
        assert not r.skip_term.any()
        np.testing.assert_array_equal(r.branch_term, r.grad_in)


def test_preact_resnet20_eq5_terms_add_up():
    mr.manual_seed(0)
    terms = analysis.preact_decomposition(create("preact_resnet20"), *_batch())
    assert [t.name for t in terms] == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2",
                                       "layer3.1", "layer3.2"]
    assert [t.end for t in terms][:3] == ["layer2.0"] * 3 and terms[-1].end == "output"
    for t in terms:
        scale = np.abs(t.grad_in).max()
        np.testing.assert_allclose(t.direct_term + t.residual_term, t.grad_in, rtol=0, atol=1e-5 * scale)


def test_jvp_of_a_resnet_block_matches_finite_differences_in_float64():
    mr.manual_seed(0)
    net = create("resnet20", shortcut="B").double()
    block = net.layer2[0]  # stride 2, projection shortcut, BN in train mode
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 8, 8))
    v = rng.standard_normal(x.shape)
    _, jv = analysis.jvp(block, x, v)
    h = 1e-6
    with mr.no_grad():
        fd = (block(mr.tensor(x + h * v)).numpy() - block(mr.tensor(x - h * v)).numpy()) / (2 * h)
    np.testing.assert_allclose(jv, fd, rtol=1e-6, atol=1e-7)


def test_gradient_ratio_is_larger_for_plain_than_residual():
    x, y = _batch(8)
    ratios = {}
    for name in ("plain20", "resnet20"):
        mr.manual_seed(0)
        ratios[name] = analysis.conv_gradient_ratio(create(name), x, y)
        assert ratios[name]["first"] == "conv1.weight" and ratios[name]["last"] == "layer3.2.conv2.weight"
    assert ratios["plain20"]["log10_ratio"] > ratios["resnet20"]["log10_ratio"]
