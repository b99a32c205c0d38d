"""Forward-mode JVPs through the fused batch norm (+ addend) + ReLU equal those through the
module-by-module graph, and finite differences (float64)."""

import copy

import numpy as np
import pytest

import minires as mr
import minires.functional as F
import minires.models as models
from minires import analysis
from tests.helpers import graph_ops, randomise_bn

TIGHT = dict(rtol=1e-10, atol=1e-12)


def _jvp_both(model, x, v, set_fusion):
    """``(out, J v, graph op counts)`` with fusion on and off, each on a copy of ``model``."""
    results = []
    for fused in (True, False):
        set_fusion(fused)
        m = copy.deepcopy(model)
        out, jv = analysis.jvp(m.forward, x, v, params=list(m.parameters()))
        results.append((out.numpy(), jv, graph_ops(m(mr.tensor(x, requires_grad=True)))))
    return results


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("make", [lambda: models.BasicBlock(4, 4), lambda: models.BasicBlock(4, 8, 2, shortcut="B"),
                                  lambda: models.PreActBasicBlock(4, 4)], ids=["identity", "projection", "preact"])
def test_block_jvp_fused_equals_unfused(make, training, rng, fusion):
    block = randomise_bn(make().double(), rng).train(training)
    x, v = rng.standard_normal((3, 4, 5, 5)), rng.standard_normal((3, 4, 5, 5))
    (out, jv, ops), (ref_out, ref_jv, ref_ops) = _jvp_both(block, x, v, fusion)
    assert ops["ReLU"] == 0 and ref_ops["ReLU"] > 0        # the fused rule was exercised
    np.testing.assert_allclose(out, ref_out, **TIGHT)
    np.testing.assert_allclose(jv, ref_jv, **TIGHT)
    assert np.abs(jv).max() > 0
    fusion(True)
    h = 1e-6
    with mr.no_grad():
        fd = (block(mr.tensor(x + h * v)).numpy() - block(mr.tensor(x - h * v)).numpy()) / (2 * h)
    np.testing.assert_allclose(jv, fd, rtol=1e-6, atol=1e-8)


def test_resnet20_jvp_fused_equals_unfused(rng, fusion):
    model = randomise_bn(models.create("resnet20", num_classes=5).double(), rng).train()
    x, v = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((2, 3, 8, 8))
    (out, jv, ops), (ref_out, ref_jv, ref_ops) = _jvp_both(model, x, v, fusion)
    assert ops["ReLU"] == 0 and ref_ops["ReLU"] == 19
    np.testing.assert_allclose(out, ref_out, **TIGHT)
    np.testing.assert_allclose(jv, ref_jv, **TIGHT)


def test_jvp_of_the_functional_wrt_the_addend(rng):
    # the rule's addend tangent on its own: J_a v = 1[out > 0] v
    x, a, v = (rng.standard_normal((4, 3, 2, 2)) for _ in range(3))
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5
    out, jv = analysis.jvp(lambda t: F.batch_norm_add_relu(mr.tensor(x), t, mean, var), a, v)
    np.testing.assert_allclose(jv, np.where(out.numpy() > 0, v, 0), rtol=0, atol=0)
