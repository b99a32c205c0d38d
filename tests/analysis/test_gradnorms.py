"""gradient_norms / conv_gradient_ratio / gradient_profile against a plain backward."""

import numpy as np
import pytest

import minires as mr
from minires import analysis

from .tiny import batch, tiny_net

SPECS = [(3, 3, 1, "identity"), (3, 4, 2, "A"), (4, 4, 1, "B")]


def _reference_grads(net, x, y):
    for p in net.parameters():
        p.grad = None
    mr.functional.cross_entropy(net(x), y).backward()
    grads = {name: p.grad.copy() for name, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = None
    return grads


def test_param_norms_match_a_plain_backward_and_leave_the_model_alone():
    net = tiny_net(SPECS)
    x, y = batch()
    state = {k: np.array(v, copy=True) for k, v in net.state_dict().items()}
    ref = _reference_grads(net, x, y)
    for k, v in net.state_dict().items():  # the reference backward moved BN stats: put them back
        np.asarray(v)[...] = state[k]
    rows = analysis.gradient_norms(net, x, y)
    params = [r for r in rows if r["kind"] == "param"]
    expected = [n for n, p in net.named_parameters() if n.endswith("weight") and p.data.ndim in (2, 4)]
    assert [r["name"] for r in params] == expected
    assert [r["depth"] for r in params] == list(range(len(expected)))
    for r in params:
        assert r["norm"] == pytest.approx(np.linalg.norm(ref[r["name"]]), rel=1e-12)
    acts = [r for r in rows if r["kind"] == "activation"]
    assert [r["name"] for r in acts] == ["layers.0", "layers.1", "layers.2", "layers.2.out"]
    records = analysis.trace_residual_stream(net, x, y)
    assert acts[1]["norm"] == pytest.approx(np.linalg.norm(records[1].grad_in), rel=1e-12)
    assert acts[-1]["norm"] == pytest.approx(np.linalg.norm(records[-1].grad_out), rel=1e-12)
    assert all(p.grad is None for p in net.parameters())
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), state[k], err_msg=k)


def test_conv_ratio_and_profile_agree():
    net = tiny_net(SPECS)
    x, y = batch()
    ref = _reference_grads(net, x, y)
    ratio = analysis.conv_gradient_ratio(net, x, y)
    assert ratio["first"] == "conv1.weight" and ratio["last"] == "layers.2.proj.weight"
    assert ratio["ratio"] == pytest.approx(np.linalg.norm(ref["conv1.weight"]) / np.linalg.norm(ref[ratio["last"]]))
    ratio2 = analysis.conv_gradient_ratio(net, x, y, last="layers.2.conv2.weight")
    assert ratio2["last_norm"] == pytest.approx(np.linalg.norm(ref["layers.2.conv2.weight"]))
    profile = analysis.gradient_profile(net, x, y)
    assert profile["conv_ratio"]["log10_ratio"] == pytest.approx(ratio["log10_ratio"], rel=1e-10)
    assert len(profile["blocks"]) == 3 and profile["blocks"][0].grad_in is None
    with pytest.raises(ValueError, match="no parameter named 'nope'"):
        analysis.conv_gradient_ratio(net, x, y, first="nope")
