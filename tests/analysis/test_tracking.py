"""GradientTracker: block terms from the training step itself, against trace_residual_stream (float64)."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import analysis, models, optim
from minires.analysis import GradientTracker

from .tiny import batch, tiny_net

SPECS = [(3, 3, 1, "identity"), (3, 4, 2, "A"), (4, 4, 1, "scaled"), (4, 6, 2, "B"), (6, 6, 1, None)]
NORM_KEYS = {"skip": "skip", "branch": "branch", "grad_in": "sum", "grad_pre": "grad_at_sum"}


def _tracked_step(net, x, y, opt, step=0, every=1):
    tracker = GradientTracker(net, every=every)
    with tracker.step(step) as tracked:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        tracked.measure(loss=float(loss.item()))
        opt.step()
    return tracked


def _assert_matches_trace(net, x, y, steps_before=0):
    """Train a few untracked steps, then compare one tracked step with the trace on the same weights."""
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for _ in range(steps_before):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    records = analysis.trace_residual_stream(net, x, y, keep_tensors=False)
    blocks = _tracked_step(net, x, y, opt).record["blocks"]
    assert [b["name"] for b in blocks] == [r.name for r in records]
    assert [b["kind"] for b in blocks] == [r.kind for r in records]
    for r, b in zip(records, blocks):
        for trace_key, key in NORM_KEYS.items():
            assert b[key] == pytest.approx(r.norms[trace_key], rel=1e-10, abs=1e-300), (r.name, key)
        if r.kind == "plain":
            assert b["skip"] == 0.0 and b["cosine"] is None
            assert b["ratio"] == pytest.approx(r.norms["branch"] / r.norms["grad_pre"], rel=1e-10)
        else:
            assert b["ratio"] == pytest.approx(r.ratio, rel=1e-10)
            assert b["cosine"] == pytest.approx(r.cosine, rel=1e-8, abs=1e-12)
    return blocks


@pytest.mark.parametrize("preact", [False, True])
def test_block_norms_equal_trace_on_every_shortcut_kind(preact):
    net = tiny_net(SPECS, preact=preact)
    x, y = batch()
    blocks = _assert_matches_trace(net, x, y, steps_before=2)
    assert [b["kind"] for b in blocks] == ["preact" if preact else "original"] * 4 + ["plain"]


@pytest.mark.parametrize("name, kwargs", [("resnet20", {}), ("resnet20", {"shortcut": "B"}), ("plain20", {}),
                                          ("preact_resnet20", {})])
def test_block_norms_equal_trace_on_library_models(name, kwargs):
    mr.manual_seed(0)
    net = models.create(name, **kwargs).double()
    rng = np.random.default_rng(1)
    x = mr.tensor(rng.standard_normal((6, 3, 12, 12)), dtype=np.float64)
    y = mr.tensor(rng.integers(0, 10, 6))
    blocks = _assert_matches_trace(net, x, y, steps_before=1)
    assert len(blocks) == 9


def test_a_frozen_stem_still_gives_the_first_block_its_input_gradient():
    net = tiny_net(SPECS[:2])
    net.conv1.requires_grad_(False)
    net.bn1.requires_grad_(False)
    x, y = batch()
    blocks = _assert_matches_trace(net, x, y)
    assert blocks[0]["sum"] > 0


def _resnet20_b():
    mr.manual_seed(0)
    return models.create("resnet20", shortcut="B").double()


@pytest.mark.parametrize("build", [lambda: tiny_net(SPECS), _resnet20_b], ids=["tiny", "resnet20-B"])
def test_tracking_does_not_change_training(build):
    x, y = batch()
    if build is _resnet20_b:
        rng = np.random.default_rng(2)
        x = mr.tensor(rng.standard_normal((4, 3, 8, 8)), dtype=np.float64)
        y = mr.tensor(rng.integers(0, 10, 4))
    states = []
    for every in (None, 1):
        net = build()
        opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for step in range(3):
            if every is None:
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            else:
                assert _tracked_step(net, x, y, opt, step, every).record is not None
        states.append(net.state_dict())
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key].data if hasattr(states[0][key], "data") else states[0][key],
                                      states[1][key].data if hasattr(states[1][key], "data") else states[1][key],
                                      err_msg=key)


def test_parameter_statistics_are_those_of_the_step():
    net = tiny_net(SPECS)
    x, y = batch()
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    before = {n: p.data.copy() for n, p in net.named_parameters()}
    tracked = _tracked_step(net, x, y, opt, step=4, every=2)
    record = tracked.record
    assert record["step"] == 4 and isinstance(record["loss"], float)
    params = dict(net.named_parameters())
    assert [e["name"] for e in record["params"]] == list(params)
    for entry in record["params"]:
        p, w0 = params[entry["name"]], before[entry["name"]]
        assert entry["grad_norm"] == pytest.approx(np.linalg.norm(p.grad), rel=1e-12)
        assert entry["weight_norm"] == pytest.approx(np.linalg.norm(w0), rel=1e-12)
        if np.linalg.norm(w0) == 0:
            assert entry["update_ratio"] is None  # BN biases start at zero
        else:
            expected = np.linalg.norm(p.data - w0) / np.linalg.norm(w0)
            assert entry["update_ratio"] == pytest.approx(expected, rel=1e-12)
            assert entry["update_ratio"] > 0


def test_steps_that_are_not_due_record_nothing_and_hook_nothing():
    net = tiny_net(SPECS[:2])
    x, y = batch()
    tracker = GradientTracker(net, every=3)
    assert [tracker.due(s) for s in range(7)] == [True, False, False, True, False, False, True]
    with tracker.step(1) as tracked:
        assert not net.layers[0]._forward_hooks
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        tracked.measure(loss=1.0)
    assert tracked.record is None


def test_hooks_are_removed_and_nothing_is_recorded_after_an_exception():
    net = tiny_net(SPECS[:2])
    x, y = batch()
    tracker = GradientTracker(net, every=1)
    with pytest.raises(ZeroDivisionError):
        with tracker.step(0) as tracked:
            F.cross_entropy(net(x), y).backward()
            tracked.measure()
            1 / 0
    assert tracked.record is None
    assert not any(b._forward_hooks or b._forward_pre_hooks for b in net.layers)


def test_clear_errors():
    net = tiny_net(SPECS[:2])
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        GradientTracker(net, every=0)
    with GradientTracker(net, every=1).step(0) as tracked:
        with pytest.raises(RuntimeError, match="before the model's forward"):
            tracked.measure()
    net.layers[0].post_activation = F.sigmoid
    with pytest.raises(ValueError, match="layers.0.*needs a ReLU or no activation"):
        GradientTracker(net, every=1)
