"""The channels-last batch norm with an addend (relu(bn(x) + addend)) against the reference
kernels: values, running statistics, the masked gradient, the folded and the exact
normalisation, and NaN semantics."""

from __future__ import annotations

import numpy as np
import pytest

from minires.kernels import fused as FU
from minires.kernels import norm as NK
from minires.kernels.norm import BatchNormParams, GradsNeeded
from tests.kernels.test_fused import TOL, _case, channels_last

ADDEND_LAYOUTS = {"channels_last": channels_last, "nchw": np.ascontiguousarray}


def _forward_both(x, weight, bias, rm, rv, training, addend, relu=True, **fast_options):
    """The fast forward and the reference forward on copies of the running statistics."""
    ref_stats = (rm.copy(), rv.copy())
    fast = FU.batch_norm_forward_nhwc(x, BatchNormParams(weight, bias, rm, rv, training, 0.1, 1e-5, relu), addend,
                                      **fast_options)
    ref = NK.batch_norm_forward_cpu(np.ascontiguousarray(x),
                                    BatchNormParams(weight, bias, *ref_stats, training, 0.1, 1e-5, relu), addend)
    return fast, ref, ref_stats


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no_relu"])
@pytest.mark.parametrize("layout", sorted(ADDEND_LAYOUTS))
def test_addend_matches_reference(dtype, training, relu, layout, rng, threads, chunks):
    x, weight, bias, (rm, rv), grad = _case(rng, dtype)
    addend = ADDEND_LAYOUTS[layout](rng.standard_normal(x.shape).astype(dtype))
    (out, saved, inv_std), (ref_out, ref_x_hat, ref_inv_std), (rm_ref, rv_ref) = _forward_both(
        x, weight, bias, rm, rv, training, addend, relu)
    assert FU.is_channels_last(out) and out.dtype == dtype
    if relu:
        assert 0 < (out > 0).mean() < 1
    for mine, ref in ((out, ref_out), (saved.materialize(), ref_x_hat), (inv_std, ref_inv_std), (rm, rm_ref),
                      (rv, rv_ref)):
        np.testing.assert_allclose(mine, ref, **TOL[dtype])
    params = BatchNormParams(weight, bias, None, None, training, 0.1, 1e-5, relu)
    with_addend = GradsNeeded(addend=True)
    gx, gw, gb, masked = FU.batch_norm_backward_nhwc(grad, (out, saved, inv_std), params, with_addend)
    ref_grads = NK.batch_norm_backward_cpu(grad, (ref_out, ref_x_hat, ref_inv_std), params, with_addend)
    assert len(ref_grads) == 4 and ref_grads.addend is not None
    for mine, ref in zip((gx, gw, gb, masked), ref_grads):
        np.testing.assert_allclose(mine, ref, **TOL[dtype])
    expected_mask = np.where(ref_out > 0, grad, 0) if relu else grad
    np.testing.assert_array_equal(masked, expected_mask)     # a select: exact
    np.testing.assert_array_equal(ref_grads[3], expected_mask)
    # without the addend's gradient: the same three gradients
    three = FU.batch_norm_backward_nhwc(grad, (out, saved, inv_std), params)
    assert three.addend is None
    for mine, ref in zip(three[:3], (gx, gw, gb)):
        np.testing.assert_array_equal(mine, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eval_without_x_hat_adds_the_addend(dtype, rng, threads):
    x, weight, bias, (rm, rv), _ = _case(rng, dtype)
    addend = rng.standard_normal(x.shape).astype(dtype)
    (out, saved, inv_std), (ref_out, _, _), _ = _forward_both(x, weight, bias, rm, rv, False, addend,
                                                              need_x_hat=False)
    assert saved is None and FU.is_channels_last(out)
    np.testing.assert_allclose(out, ref_out, **TOL[dtype])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_dispatchers_route_the_addend(training, rng, monkeypatch):
    x, weight, bias, (rm, rv), grad = _case(rng, np.float64)
    addend = rng.standard_normal(x.shape)
    calls = []
    nhwc = NK.BATCH_NORM.get("nhwc")
    real_forward, real_backward = nhwc.forward, nhwc.backward
    monkeypatch.setattr(nhwc, "forward", lambda *a, **k: calls.append("f") or real_forward(*a, **k))
    monkeypatch.setattr(nhwc, "backward", lambda *a, **k: calls.append("b") or real_backward(*a, **k))
    results = []
    for data in (x, np.ascontiguousarray(x)):                 # fast path, then the reference
        params = BatchNormParams(weight, bias, rm.copy(), rv.copy(), training, relu=True)
        saved = NK.batch_norm_forward(data, params, addend)
        grads = NK.batch_norm_backward(grad, saved, params, GradsNeeded(addend=True))
        assert len(grads) == 4 and grads.addend is not None
        results.append((saved.out,) + grads)
    assert calls == ["f", "b"]
    for mine, ref in zip(*results):
        np.testing.assert_allclose(mine, ref, **TOL[np.float64])
    with pytest.raises(ValueError, match=r"addend of shape \(5, 3, 4, 5\) does not match"):
        NK.batch_norm_forward(x, BatchNormParams(weight, bias, rm, rv, training, relu=True), addend[..., :5])


# --- folded vs exact normalisation --------------------------------------------------------

def _count_exact(monkeypatch):
    """Count calls of ``SavedInput.rows``: the exact branch's forward makes x_hat with it, the folded one not."""
    calls = []
    real = FU.SavedInput.rows
    monkeypatch.setattr(FU.SavedInput, "rows", lambda self, *a: calls.append(1) or real(self, *a))
    return calls


@pytest.mark.parametrize("limit", [0.0, np.inf], ids=["exact", "folded"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_each_normalisation_branch_matches_reference(limit, training, rng, monkeypatch, chunks):
    monkeypatch.setattr(FU, "_FOLD_LIMIT", limit)
    calls = _count_exact(monkeypatch)
    x, weight, bias, (rm, rv), grad = _case(rng, np.float32)
    addend = rng.standard_normal(x.shape).astype(np.float32)
    (out, saved, inv_std), (ref_out, _, _), (rm_ref, rv_ref) = _forward_both(x, weight, bias, rm, rv, training,
                                                                            addend)
    assert bool(calls) == (limit == 0.0)
    np.testing.assert_allclose(out, ref_out, **TOL[np.float32])
    np.testing.assert_allclose(rm, rm_ref, **TOL[np.float32])
    np.testing.assert_allclose(rv, rv_ref, **TOL[np.float32])


def _large_mean_case(rng, dtype=np.float32):
    # |mean| / std ~ 1e3 in every channel, mean not a float32-representable round number; weights
    # of order 1, so the output's error is the error of x_hat in units of the channel's std
    std = np.array([1, 0.5, 2, 1])[:, None, None]
    x = channels_last((1000.3 + rng.standard_normal((6, 4, 5, 5)) * std).astype(dtype))
    weight, bias = np.array([1.5, -0.8, 1.2, 0.9], dtype), rng.standard_normal(4).astype(dtype)
    addend = rng.standard_normal(x.shape).astype(dtype)
    return x, weight, bias, addend


def _error_in_stds(x, weight, bias, addend, out):
    """max |out - truth| / |weight| with the truth relu(bn(x) + addend) (training) in float64."""
    as64 = [a.astype(np.float64) for a in (x, weight, bias, addend)]
    truth, _, _ = NK.batch_norm_forward_cpu(np.ascontiguousarray(as64[0]),
                                            BatchNormParams(as64[1], as64[2], None, None, True, 0.1, 1e-5, True),
                                            as64[3])
    return (np.abs(out - truth) / np.abs(as64[1]).reshape(1, -1, 1, 1)).max()


def test_large_mean_takes_the_exact_branch_and_stays_accurate(rng, monkeypatch):
    x, weight, bias, addend = _large_mean_case(rng)
    calls = _count_exact(monkeypatch)
    out, _, _ = FU.batch_norm_forward_nhwc(x, BatchNormParams(weight, bias, None, None, True, 0.1, 1e-5, True), addend)
    assert calls, "|mean| * inv_std ~ 1e3 > _FOLD_LIMIT: the exact two-step centring must run"
    # float32 rounding of a few O(1) operations: about 1e-7 of a standard deviation
    assert _error_in_stds(x, weight, bias, addend, out) < 2e-6


def test_large_mean_folded_would_lose_accuracy(rng, monkeypatch):
    # why the limit exists: rounding mean' ~ 1000 to float32 moves x_hat by up to ~3e-5 std
    x, weight, bias, addend = _large_mean_case(rng)
    monkeypatch.setattr(FU, "_FOLD_LIMIT", np.inf)
    folded, _, _ = FU.batch_norm_forward_nhwc(x, BatchNormParams(weight, bias, None, None, True, 0.1, 1e-5, True),
                                              addend)
    assert _error_in_stds(x, weight, bias, addend, folded) > 5e-6


# --- NaN ----------------------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_nan_semantics_with_an_addend(training, rng, threads):
    x, weight, bias, (rm, rv), grad = _case(rng, np.float64)
    addend = rng.standard_normal(x.shape)
    addend[0, 1, 2, 3] = np.nan                               # relu(NaN) stays NaN
    (out, saved, inv_std), (ref_out, ref_x_hat, ref_inv_std), _ = _forward_both(x, weight, bias, rm, rv, training,
                                                                                addend)
    assert np.isnan(out[0, 1, 2, 3]) and np.isnan(out).sum() == 1
    np.testing.assert_allclose(out, ref_out, **TOL[np.float64])  # (NaN at the same place)
    dead = tuple(np.argwhere(out <= 0)[0])
    live = tuple(np.argwhere(out > 0)[0])
    grad[dead] = np.nan                                       # dropped by the ReLU: a select gives 0
    params, with_addend = BatchNormParams(weight, bias, None, None, training, relu=True), GradsNeeded(addend=True)
    gx, gw, gb, masked = FU.batch_norm_backward_nhwc(grad, (out, saved, inv_std), params, with_addend)
    ref = NK.batch_norm_backward_cpu(grad, (ref_out, ref_x_hat, ref_inv_std), params, with_addend)
    assert masked[dead] == 0 and masked[0, 1, 2, 3] == grad[0, 1, 2, 3]  # a NaN output keeps its gradient
    assert np.isfinite(gx).all() and np.isfinite(gw).all() and np.isfinite(gb).all()
    for mine, r in zip((gx, gw, gb, masked), ref):
        np.testing.assert_allclose(mine, r, **TOL[np.float64])
    grad[live] = np.nan                                       # a kept NaN gradient propagates
    masked = FU.batch_norm_backward_nhwc(grad, (out, saved, inv_std), params, with_addend).addend
    assert np.isnan(masked[live]) and masked[dead] == 0
