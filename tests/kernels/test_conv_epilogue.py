"""The inference conv + batch norm (+ addend) + ReLU epilogue fusion against the ops one by one."""

from __future__ import annotations

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import nn
from minires.kernels import conv_fast as CF
from minires.kernels import fused as FU
from minires.kernels.conv import conv_geometry
from minires.kernels.norm import BatchNormParams
from minires.ops.norm import conv_batch_norm_eval
from tests.kernels.test_fused import TOL, channels_last


def _unfused(x, w, cb, stride, padding, weight, bias, rm, rv, eps, addend, relu):
    y = F.conv2d(mr.tensor(x), mr.tensor(w), None if cb is None else mr.tensor(cb), stride=stride, padding=padding)
    y = F.batch_norm(y, rm, rv, None if weight is None else mr.tensor(weight),
                     None if bias is None else mr.tensor(bias), training=False, eps=eps)
    if addend is not None:
        y = y + mr.tensor(addend)
    return (F.relu(y) if relu else y).numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0), (5, 1, 2)])
@pytest.mark.parametrize("with_addend", [False, True])
@pytest.mark.parametrize("affine,conv_bias", [(True, False), (False, True)])
def test_matches_the_ops_one_by_one(dtype, kernel, stride, padding, with_addend, affine, conv_bias, rng, threads,
                                    monkeypatch):
    monkeypatch.setattr(CF, "_CHUNK_BYTES", 1)   # one image per chunk: every chunk boundary exercised
    N, C, H, W, O = 5, 3, 7, 6, 4
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, kernel, kernel)).astype(dtype)
    cb = rng.standard_normal(O).astype(dtype) if conv_bias else None
    weight, bias = (rng.standard_normal(O).astype(dtype), rng.standard_normal(O).astype(dtype)) if affine else (None, None)
    rm, rv = rng.standard_normal(O).astype(dtype), (rng.random(O) + 0.5).astype(dtype)
    g = conv_geometry(x.shape, w.shape, stride, padding)
    addend = rng.standard_normal(g.out_shape).astype(dtype) if with_addend else None
    for relu in (True, False):
        out = FU.conv_bn_eval_nhwc(x, w, cb, g, BatchNormParams(weight, bias, rm, rv, eps=1e-5, relu=relu), addend)
        assert FU.is_channels_last(out) and out.dtype == dtype and out.shape == g.out_shape
        ref = _unfused(x, w, cb, stride, padding, weight, bias, rm, rv, 1e-5, addend, relu)
        np.testing.assert_allclose(out, ref, **TOL[dtype])
    # a channels-last addend gives the same result as a contiguous one
    if with_addend:
        params = BatchNormParams(weight, bias, rm, rv, eps=1e-5, relu=True)
        same = FU.conv_bn_eval_nhwc(x, w, cb, g, params, channels_last(addend))
        np.testing.assert_array_equal(same, FU.conv_bn_eval_nhwc(x, w, cb, g, params, addend))


def test_relu_keeps_nan_and_zeroes_negatives(rng):
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    g = conv_geometry(x.shape, w.shape, 1, 1)
    out = FU.conv_bn_eval_nhwc(x, w, None, g, BatchNormParams(None, None, np.zeros(3, np.float32),
                                                              np.ones(3, np.float32), eps=0.0, relu=True))
    assert np.isnan(out[0]).any() and not np.isnan(out[1]).any()
    assert (out[~np.isnan(out)] >= 0).all()


def test_op_builds_no_graph_and_declines_what_it_cannot_do(rng):
    x = mr.tensor(rng.standard_normal((2, 4, 5, 5)).astype(np.float32))
    w = mr.tensor(rng.standard_normal((6, 4, 3, 3)).astype(np.float32), requires_grad=True)
    rm, rv = mr.tensor(np.zeros(6, np.float32)), mr.tensor(np.ones(6, np.float32))
    out = conv_batch_norm_eval(x, w, None, 1, 1, rm, rv, None, None, 1e-5)
    assert out is not None and not out.requires_grad and out.shape == (2, 6, 5, 5)
    # float64 weights with a float32 input, statistics of the wrong length, fast paths off: None
    assert conv_batch_norm_eval(x, mr.tensor(w.numpy().astype(np.float64)), None, 1, 1, rm, rv, None, None, 1e-5) is None
    assert conv_batch_norm_eval(x, w, None, 1, 1, mr.tensor(np.zeros(5, np.float32)), rv, None, None, 1e-5) is None
    FU.set_fast_paths(False)
    try:
        assert conv_batch_norm_eval(x, w, None, 1, 1, rm, rv, None, None, 1e-5) is None
    finally:
        FU.set_fast_paths(True)
    with pytest.raises(ValueError, match="addend"):
        conv_batch_norm_eval(x, w, None, 1, 1, rm, rv, None, None, 1e-5,
                             addend=mr.tensor(np.zeros((2, 6, 4, 4), np.float32)))


def test_op_is_recorded_like_every_other(rng):
    # it runs through Function.apply (under no_grad), so record_ops sees it
    from minires.autograd import record_ops
    x = mr.tensor(rng.standard_normal((2, 4, 5, 5)).astype(np.float32))
    w = mr.tensor(rng.standard_normal((6, 4, 3, 3)).astype(np.float32))
    rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
    with record_ops() as ops:
        out = conv_batch_norm_eval(x, w, None, 1, 1, rm, rv, None, None, 1e-5)
    assert [cls.__name__ for cls, *_ in ops] == ["ConvBatchNormEval"] and ops[0][3] is out
    assert mr.is_grad_enabled()


def _trained_resnet20(dtype):
    mr.manual_seed(0)
    model = mr.models.create("resnet20").to(dtype)
    x = mr.tensor(np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(dtype))
    opt = mr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):  # non-trivial running statistics and weights
        opt.zero_grad()
        F.cross_entropy(model(x), mr.tensor(np.arange(8) % 10)).backward()
        opt.step()
    return model.eval(), x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resnet20_inference_equals_unfused(dtype):
    model, x = _trained_resnet20(dtype)
    calls = []
    real = FU.conv_bn_eval_nhwc
    FU.conv_bn_eval_nhwc = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        with mr.no_grad():
            fused = model(x).numpy()
        assert len(calls) == 19       # stem + two per block, each once
        nn.set_fusion(False)
        with mr.no_grad():
            plain = model(x).numpy()
        assert len(calls) == 19
    finally:
        FU.conv_bn_eval_nhwc = real
        nn.set_fusion(True)
    np.testing.assert_allclose(fused, plain, **TOL[dtype])
    # with a gradient wanted (eval mode analysis), nothing is fused into the epilogue
    out = model(x)
    assert out.requires_grad and len(calls) == 19
    np.testing.assert_allclose(out.numpy(), plain, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride", [1, 2])
def test_matches_pytorch(dtype, stride, rng):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    w = rng.standard_normal((5, 4, 3, 3)).astype(dtype)
    weight, bias = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    rm, rv = rng.standard_normal(5).astype(dtype), (rng.random(5) + 0.5).astype(dtype)
    g = conv_geometry(x.shape, w.shape, stride, 1)
    addend = rng.standard_normal(g.out_shape).astype(dtype)
    out = FU.conv_bn_eval_nhwc(x, w, None, g, BatchNormParams(weight, bias, rm, rv, eps=1e-5, relu=True), addend)
    t = [torch.from_numpy(a) for a in (x, w, rm, rv, weight, bias, addend)]
    ref = torch.relu(tf.batch_norm(tf.conv2d(t[0], t[1], stride=stride, padding=1), t[2], t[3], t[4], t[5],
                                   training=False, eps=1e-5) + t[6]).numpy()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out, ref, **tol)


@pytest.mark.parametrize("with_addend", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_forward_mode_rule_matches_finite_differences(with_addend, relu, rng):
    from minires import analysis

    N, C, H, W, O = 2, 3, 6, 5, 4
    x0 = rng.standard_normal((N, C, H, W))
    w = mr.tensor(rng.standard_normal((O, C, 3, 3)))
    weight, bias = mr.tensor(rng.standard_normal(O)), mr.tensor(rng.standard_normal(O))
    rm, rv = rng.standard_normal(O), rng.random(O) + 0.5
    addend = mr.tensor(rng.standard_normal((N, O, H, W))) if with_addend else None

    def fused_op(t):
        out = conv_batch_norm_eval(t, w, None, 1, 1, rm, rv, weight, bias, 1e-5, addend, relu)
        assert out is not None, "the fused epilogue must apply to this float64 problem"
        return out

    v = rng.standard_normal(x0.shape)
    h = 1e-6
    with mr.no_grad():
        fd = (fused_op(mr.tensor(x0 + h * v)).numpy() - fused_op(mr.tensor(x0 - h * v)).numpy()) / (2 * h)
    _, jv = analysis.jvp(fused_op, x0, v)
    np.testing.assert_allclose(jv, fd, rtol=1e-6, atol=1e-8)
