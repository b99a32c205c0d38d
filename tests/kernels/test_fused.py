"""The channels-last batch norm fast path (minires/kernels/fused.py) against the reference
kernels of minires/kernels/norm.py, in both float dtypes, with small chunks and threads."""

from __future__ import annotations

import numpy as np
import pytest

from minires.kernels import activation as AK
from minires.kernels import fused as FU
from minires.kernels import norm as NK
from minires.kernels.norm import BatchNormParams, GradsNeeded

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def channels_last(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _case(rng, dtype, shape=(5, 3, 4, 6), affine=(True, True)):
    C = shape[1]
    x = channels_last((rng.standard_normal(shape) * 2 + 1).astype(dtype))
    weight = rng.standard_normal(C).astype(dtype) if affine[0] else None
    bias = rng.standard_normal(C).astype(dtype) if affine[1] else None
    running = (rng.standard_normal(C).astype(dtype), (rng.random(C) + 0.5).astype(dtype))
    grad = rng.standard_normal(shape).astype(dtype)
    return x, weight, bias, running, grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn_relu"])
@pytest.mark.parametrize("affine", [(True, True), (False, False), (True, False)])
def test_matches_reference(dtype, training, relu, affine, rng, threads, chunks):
    x, weight, bias, (rm, rv), grad = _case(rng, dtype, affine=affine)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    params = BatchNormParams(weight, bias, rm, rv, training, 0.1, 1e-5, relu)
    out, x_hat, inv_std = FU.batch_norm_forward_nhwc(x, params)
    ref_out, ref_x_hat, ref_inv_std = NK.batch_norm_forward_cpu(x, params._replace(running_mean=rm_ref,
                                                                                   running_var=rv_ref))
    assert isinstance(x_hat, FU.SavedInput)
    x_hat_array = x_hat.materialize()
    assert FU.is_channels_last(out) and FU.is_channels_last(x_hat_array)
    assert out.dtype == x_hat_array.dtype == inv_std.dtype == dtype
    for mine, ref in ((out, ref_out), (x_hat_array, ref_x_hat), (inv_std, ref_inv_std), (rm, rm_ref), (rv, rv_ref)):
        np.testing.assert_allclose(mine, ref, **TOL[dtype])
    # the backward from the saved recipe equals the backward from the materialised x_hat
    from_saved = FU.batch_norm_backward_nhwc(grad, (out, x_hat, inv_std), params)
    from_array = FU.batch_norm_backward_nhwc(grad, (out, x_hat_array, inv_std), params)
    for a, b in zip(from_saved[:3], from_array[:3]):
        np.testing.assert_allclose(a, b, **TOL[dtype])
    # backward on the same saved arrays (the ReLU mask of the reference output), NCHW-ordered grad
    for g in (grad, channels_last(grad)):
        mine = FU.batch_norm_backward_nhwc(g, (ref_x_hat_cl(ref_out), ref_x_hat_cl(ref_x_hat), ref_inv_std), params)
        ref = NK.batch_norm_backward_cpu(g, (ref_out, ref_x_hat, ref_inv_std), params)
        assert FU.is_channels_last(mine[0])
        for m, r in zip(mine[:3], ref[:3]):
            np.testing.assert_allclose(m, r, **TOL[dtype])


def ref_x_hat_cl(a):
    return a if FU.is_channels_last(a) else channels_last(a)


def test_gradients_not_asked_for_are_none(rng):
    x, weight, bias, (rm, rv), grad = _case(rng, np.float64)
    params = BatchNormParams(weight, bias, rm, rv, False, 0.1, 1e-5)
    saved = FU.batch_norm_forward_nhwc(x, params)
    gx, gw, gb, ga = FU.batch_norm_backward_nhwc(grad, saved, params, GradsNeeded(weight=False, bias=False))
    assert gw is None and gb is None and ga is None
    inv_std = saved[2]
    np.testing.assert_allclose(gx, grad * (weight * inv_std).reshape(1, -1, 1, 1), rtol=1e-12)


def test_fused_relu_gradient_is_a_select_for_nan(rng):
    x, weight, bias, (rm, rv), grad = _case(rng, np.float64)
    params = BatchNormParams(weight, bias, rm, rv, True, 0.1, 1e-5, relu=True)
    saved = FU.batch_norm_forward_nhwc(x, params)
    dead = np.argwhere(saved[0] <= 0)[0]
    grad[tuple(dead)] = np.nan                        # masked by the ReLU: must not poison the sums
    gx, gw, gb, _ = FU.batch_norm_backward_nhwc(grad, saved, params)
    assert np.isfinite(gx).all() and np.isfinite(gw).all() and np.isfinite(gb).all()


def test_applies_only_to_channels_last_float_numpy():
    a = np.zeros((2, 3, 4, 5), np.float32)
    assert not FU.applies(a)
    assert FU.applies(channels_last(a), None)
    assert not FU.applies(channels_last(a).astype(np.int32))
    assert not FU.applies(np.zeros((2, 3), np.float32))


def test_batch_of_resnet_shape_float32(rng):
    x, weight, bias, (rm, rv), grad = _case(rng, np.float32, shape=(16, 16, 32, 32))
    out, x_hat, inv_std = FU.batch_norm_forward_nhwc(x, BatchNormParams(weight, bias, rm, rv, True, 0.1, 1e-5))
    ref = NK.batch_norm_forward_cpu(x, BatchNormParams(weight, bias, rm.copy(), rv.copy(), True, 0.1, 1e-5))
    np.testing.assert_allclose(out, ref[0], rtol=1e-4, atol=1e-4)


def test_switch_turns_the_fast_path_off():
    a = channels_last(np.zeros((2, 3, 4, 5), np.float32))
    assert FU.applies(a)
    FU.set_fast_paths(False)
    try:
        assert not FU.fast_paths_enabled() and not FU.applies(a)
    finally:
        FU.set_fast_paths(True)
    assert FU.applies(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_parity_with_a_large_mean(dtype, rng):
    # |mean| >> std: the residual-mean correction keeps float32 at PyTorch's accuracy
    torch = pytest.importorskip("torch")
    x = channels_last((1000 + rng.standard_normal((8, 4, 6, 6))).astype(dtype))
    weight, bias = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    out, x_hat, inv_std = FU.batch_norm_forward_nhwc(x, BatchNormParams(weight, bias, rm, rv, True, 0.1, 1e-5))
    t_rm, t_rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    ref = torch.nn.functional.batch_norm(torch.from_numpy(np.ascontiguousarray(x).astype(np.float64)), t_rm, t_rv,
                                         torch.from_numpy(weight.astype(np.float64)),
                                         torch.from_numpy(bias.astype(np.float64)), training=True).numpy()
    tol = 2e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(rm, t_rm.numpy(), rtol=tol)
    np.testing.assert_allclose(rv, t_rv.numpy(), rtol=tol * 10)


def test_norm_dispatchers_route_channels_last_arrays_to_the_fast_path(rng, monkeypatch):
    x, weight, bias, (rm, rv), grad = _case(rng, np.float64)
    calls = []
    nhwc = NK.BATCH_NORM.get("nhwc")
    real_forward, real_backward = nhwc.forward, nhwc.backward
    monkeypatch.setattr(nhwc, "forward", lambda *a, **k: calls.append("f") or real_forward(*a, **k))
    monkeypatch.setattr(nhwc, "backward", lambda *a, **k: calls.append("b") or real_backward(*a, **k))
    params = BatchNormParams(weight, bias, rm, rv, True)
    saved = NK.batch_norm_forward(x, params)
    NK.batch_norm_backward(grad, saved, params)
    relu_params = params._replace(relu=True)
    NK.batch_norm_backward(grad, NK.batch_norm_forward(x, relu_params), relu_params)
    assert calls == ["f", "b", "f", "b"]
    calls.clear()
    nchw = np.ascontiguousarray(x)
    ref_params = params._replace(running_mean=rm.copy(), running_var=rv.copy())
    ref = NK.batch_norm_forward(nchw, ref_params)
    NK.batch_norm_backward(grad, ref, ref_params)
    assert calls == []
    np.testing.assert_allclose(saved.out, ref.out, rtol=1e-12, atol=1e-12)
    FU.set_fast_paths(False)
    try:
        NK.batch_norm_forward(x, params)
        assert calls == []
    finally:
        FU.set_fast_paths(True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("affine", [(True, True), (False, False)])
def test_eval_without_x_hat_matches_reference(dtype, relu, affine, rng, threads):
    x, weight, bias, (rm, rv), _ = _case(rng, dtype, affine=affine)
    params = BatchNormParams(weight, bias, rm, rv, False, 0.1, 1e-5, relu)
    out, x_hat, inv_std = FU.batch_norm_forward_nhwc(x, params, need_x_hat=False)
    ref = NK.batch_norm_forward_cpu(x, params)
    assert x_hat is None and FU.is_channels_last(out) and out.dtype == dtype
    np.testing.assert_allclose(out, ref[0], **TOL[dtype])
    np.testing.assert_allclose(inv_std, ref[2], **TOL[dtype])
    # training mode ignores the flag: the batch statistics' gradient needs x_hat
    assert FU.batch_norm_forward_nhwc(x, params._replace(training=True), need_x_hat=False)[1] is not None


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_infinite_input_keeps_an_infinite_running_mean_like_the_reference(rng):
    x, weight, bias, (rm, rv), _ = _case(rng, np.float64)
    x[1, 1, 0, 1] = np.inf
    rm_ref, rv_ref = rm.copy(), rv.copy()
    FU.batch_norm_forward_nhwc(x, BatchNormParams(weight, bias, rm, rv, True, 0.1, 1e-5))
    NK.batch_norm_forward_cpu(x, BatchNormParams(weight, bias, rm_ref, rv_ref, True, 0.1, 1e-5))
    assert np.isinf(rm[1]) and np.isinf(rm_ref[1])
    np.testing.assert_allclose(rm, rm_ref, rtol=1e-12, atol=1e-12)


def test_no_grad_eval_batch_norm_op_matches_the_graph_building_one(rng):
    import minires as mr
    import minires.functional as F
    x, weight, bias, (rm, rv), _ = _case(rng, np.float32, shape=(4, 3, 5, 6))
    args = (mr.Tensor(rm), mr.Tensor(rv), mr.tensor(weight, requires_grad=True), mr.tensor(bias, requires_grad=True))
    with mr.no_grad():
        fast = F.batch_norm(mr.Tensor(x), *args, training=False)
    graph = F.batch_norm(mr.Tensor(x), *args, training=False)
    assert graph.requires_grad and not fast.requires_grad
    np.testing.assert_allclose(fast.numpy(), graph.numpy(), rtol=1e-6, atol=1e-6)
    graph.sum().backward()
    assert args[2].grad is not None


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_parallel_relu_equals_the_reference_bit_for_bit(layout, rng, threads, monkeypatch):
    monkeypatch.setattr(AK, "_RELU_MIN", 1)
    monkeypatch.setattr(AK, "_RELU_PIECE", 7)
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    g = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    x.reshape(-1)[:3] = [np.nan, 0.0, -0.0]
    g.reshape(-1)[5] = np.nan
    if layout == "channels_last":
        x, g = channels_last(x), channels_last(g)
    assert AK.RELU.select(x).name == "threads" and AK.RELU.select(g, x).name == "threads"
    out = AK.relu_forward_threads(x)
    ref = AK.relu_forward_cpu(x)
    assert out is not None and out.strides == ref.strides
    np.testing.assert_array_equal(out, ref)
    gx = AK.relu_backward_threads(g, out)
    np.testing.assert_array_equal(gx, AK.relu_backward_cpu(g, ref))
    np.testing.assert_array_equal(AK.relu_forward(x), ref)
    np.testing.assert_array_equal(AK.relu_backward(g, out), AK.relu_backward_cpu(g, ref))
    # mixed layouts and small arrays fall back to the reference
    assert AK.RELU.select(np.ascontiguousarray(g), channels_last(out)).name == "reference"
    monkeypatch.setattr(AK, "_RELU_MIN", 1 << 20)
    assert AK.RELU.select(x).name == "reference"
