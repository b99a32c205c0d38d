"""Path-length sampling (Veit et al. 2016) on tiny nets."""

import numpy as np
import pytest

from minires import analysis

from .tiny import batch, tiny_net


def test_length_zero_is_the_skip_only_path_and_full_length_is_branches_only():
    specs = [(3, 3, 1, "identity")] * 3
    net = tiny_net(specs)
    x, y = batch()
    res = analysis.path_length_distribution(net, x, y, samples=2, seed=0)
    assert res.n_blocks == 3 and res.lengths == [0, 1, 2, 3]
    records = analysis.trace_residual_stream(net, x, y)
    # k = 0: through the shortcuts only, dL/dy_last masked by each post-add ReLU
    g = records[-1].grad_out
    for r in reversed(records):
        g = g * (r.grad_pre != 0)  # grad_pre is zero exactly where the post-add ReLU blocks
    assert res.magnitude_mean[0] == pytest.approx(np.linalg.norm(g), rel=1e-12)
    assert res.magnitude_std[0] == 0.0 and res.magnitude_std[3] == 0.0
    assert sum(res.path_fraction) == pytest.approx(1.0)
    assert res.path_fraction == pytest.approx([1 / 8, 3 / 8, 3 / 8, 1 / 8])
    assert res.log10_total[1] == pytest.approx(np.log10(3 * res.magnitude_mean[1]))


def test_preact_skip_only_path_carries_the_output_gradient_unchanged():
    specs = [(3, 3, 1, "identity")] * 2
    net = tiny_net(specs, preact=True)
    x, y = batch()
    records = analysis.trace_residual_stream(net, x, y)
    full = records[0].grad_in
    res = analysis.path_length_distribution(net, x, y, lengths=[0, 2], samples=1)
    assert res.full_gradient_norm == pytest.approx(np.linalg.norm(full))
    assert res.magnitude_mean[0] == pytest.approx(np.linalg.norm(records[-1].grad_out))
    assert res.output_gradient_norm == pytest.approx(np.linalg.norm(records[-1].grad_out))


def test_plain_nets_and_bad_lengths_are_refused():
    x, y = batch()
    with pytest.raises(ValueError, match="plain"):
        analysis.path_length_distribution(tiny_net([(3, 3, 1, None)]), x, y)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 1\]"):
        analysis.path_length_distribution(tiny_net([(3, 3, 1, "identity")]), x, y, lengths=[2])
