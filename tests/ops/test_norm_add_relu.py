"""F.batch_norm_add_relu = relu(batch_norm(x) + addend) as one op: gradcheck, equality with the
unfused expression on the reference (NCHW) and the channels-last fast path, PyTorch parity,
running statistics and bad input."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires.kernels import norm as NK
from tests.torch_parity import _compare

DTYPES = [np.float32, np.float64]
#: fused vs unfused minires: the same arithmetic in the same order, so (nearly) bit-equal
SAME = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
#: minires vs PyTorch (the tolerances of tests/torch_parity.py)
TORCH_TOL = {np.float32: (2e-4, 1e-5), np.float64: (1e-9, 1e-12)}
SHAPE = (4, 3, 5, 6)


def channels_last(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def strided(a):
    """A non-contiguous view with ``a``'s values (every other element of a larger array)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


LAYOUTS = {"nchw": np.ascontiguousarray, "channels_last": channels_last, "strided": strided}


def _arrays(rng, dtype, shape=SHAPE):
    C = shape[1]
    return dict(x=(rng.standard_normal(shape) * 2 + 1).astype(dtype),
                addend=rng.standard_normal(shape).astype(dtype),
                weight=rng.standard_normal(C).astype(dtype), bias=rng.standard_normal(C).astype(dtype),
                mean=rng.standard_normal(C).astype(dtype), var=(rng.random(C) + 0.5).astype(dtype),
                grad=rng.standard_normal(shape).astype(dtype))


def _run(arrays, training, fused, x_layout="nchw", addend_layout="nchw", addend_grad=True):
    """Forward and backward of the fused op or of the unfused expression on fresh leaves.

    Returns ``(out, grads {name: array or None}, running_mean, running_var)``.
    """
    leaves = dict(x=mr.Tensor(LAYOUTS[x_layout](arrays["x"].copy()), requires_grad=True),
                  addend=mr.Tensor(LAYOUTS[addend_layout](arrays["addend"].copy()), requires_grad=addend_grad),
                  weight=mr.tensor(arrays["weight"], requires_grad=True),
                  bias=mr.tensor(arrays["bias"], requires_grad=True))
    mean, var = arrays["mean"].copy(), arrays["var"].copy()
    x, a, w, b = leaves["x"], leaves["addend"], leaves["weight"], leaves["bias"]
    options = dict(training=training, momentum=0.2, eps=1e-4)
    if fused:
        out = F.batch_norm_add_relu(x, a, mean, var, w, b, **options)
    else:
        out = F.relu(F.batch_norm(x, mean, var, w, b, **options) + a)
    out.backward(arrays["grad"])
    return out.numpy(), {k: t.grad for k, t in leaves.items()}, mean, var


# --- gradcheck ----------------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 2)])
def test_gradcheck(rng, training, shape):
    arrays = _arrays(rng, np.float64, shape)
    x, a, w, b = (mr.tensor(arrays[k], requires_grad=True) for k in ("x", "addend", "weight", "bias"))
    mean, var = arrays["mean"], arrays["var"]

    def fn(x, a, w, b):
        return F.batch_norm_add_relu(x, a, mean.copy(), var.copy(), w, b, training=training)

    out = fn(x, a, w, b).numpy()
    assert (out > 0).any() and (out == 0).any()       # both sides of the ReLU are checked
    mr.gradcheck(fn, [x, a, w, b])


# --- equal to the unfused expression ------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("x_layout, addend_layout", [("nchw", "nchw"), ("nchw", "channels_last"),
                                                     ("channels_last", "channels_last"),
                                                     ("channels_last", "nchw"), ("channels_last", "strided")])
def test_equals_unfused(rng, dtype, training, x_layout, addend_layout, monkeypatch):
    arrays = _arrays(rng, dtype)
    calls = []
    nhwc = NK.BATCH_NORM.get("nhwc")
    real = nhwc.forward
    monkeypatch.setattr(nhwc, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    out, grads, mean, var = _run(arrays, training, True, x_layout, addend_layout)
    assert bool(calls) == (x_layout == "channels_last")  # the fast path runs exactly for channels-last x
    ref_out, ref_grads, ref_mean, ref_var = _run(arrays, training, False, x_layout, addend_layout)
    assert out.dtype == dtype and 0 < (out > 0).mean() < 1
    np.testing.assert_allclose(out, ref_out, **SAME[dtype])
    for name, ref in ref_grads.items():
        assert grads[name].dtype == dtype, name
        np.testing.assert_allclose(grads[name], ref, **SAME[dtype], err_msg=name)
    np.testing.assert_allclose(grads["addend"], np.where(out > 0, arrays["grad"], 0), **SAME[dtype])
    np.testing.assert_allclose(mean, ref_mean, **SAME[dtype])
    np.testing.assert_allclose(var, ref_var, **SAME[dtype])
    if training:
        assert not np.allclose(mean, arrays["mean"])  # the running statistics did move
    else:
        np.testing.assert_array_equal(mean, arrays["mean"])


@pytest.mark.parametrize("x_layout", ["nchw", "channels_last"])
def test_addend_without_grad_gets_none(rng, x_layout):
    arrays = _arrays(rng, np.float64)
    out, grads, _, _ = _run(arrays, True, True, x_layout, addend_grad=False)
    _, ref_grads, _, _ = _run(arrays, True, False, x_layout, addend_grad=False)
    assert grads["addend"] is None
    for name in ("x", "weight", "bias"):
        np.testing.assert_allclose(grads[name], ref_grads[name], **SAME[np.float64])


def test_only_the_addend_requires_grad(rng):
    arrays = _arrays(rng, np.float64)
    x, a = mr.tensor(arrays["x"]), mr.tensor(arrays["addend"], requires_grad=True)
    out = F.batch_norm_add_relu(x, a, None, None, training=True)
    assert out.requires_grad
    out.backward(arrays["grad"])
    np.testing.assert_array_equal(a.grad, np.where(out.numpy() > 0, arrays["grad"], 0))
    assert x.grad is None


def test_no_grad_runs_without_a_graph(rng):
    arrays = _arrays(rng, np.float32)
    x, a = mr.Tensor(channels_last(arrays["x"]), requires_grad=True), mr.tensor(arrays["addend"], requires_grad=True)
    with mr.no_grad():
        out = F.batch_norm_add_relu(x, a, arrays["mean"], arrays["var"], training=False)
    assert not out.requires_grad
    ref = F.relu(F.batch_norm(x, arrays["mean"], arrays["var"], training=False) + a)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), **SAME[np.float32])


# --- PyTorch parity -----------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("x_layout, addend_layout", [("nchw", "nchw"), ("channels_last", "channels_last"),
                                                     ("channels_last", "nchw")])
def test_torch_parity(rng, dtype, training, x_layout, addend_layout):
    torch = pytest.importorskip("torch")
    arrays = _arrays(rng, dtype)
    out, grads, mean, var = _run(arrays, training, True, x_layout, addend_layout)
    t = {k: torch.tensor(arrays[k].copy(), requires_grad=k in ("x", "addend", "weight", "bias"))
         for k in ("x", "addend", "weight", "bias", "mean", "var")}
    t_out = torch.relu(torch.nn.functional.batch_norm(t["x"], t["mean"], t["var"], t["weight"], t["bias"],
                                                      training=training, momentum=0.2, eps=1e-4) + t["addend"])
    t_out.backward(torch.from_numpy(arrays["grad"]))
    rtol, atol = TORCH_TOL[dtype]
    _compare("output", out, t_out.detach().numpy(), rtol, atol)
    for name, g in grads.items():
        _compare(f"grad of {name}", np.asarray(g), t[name].grad.numpy(), rtol, atol)
    _compare("running_mean", mean, t["mean"].detach().numpy(), rtol, atol)
    _compare("running_var", var, t["var"].detach().numpy(), rtol, atol)


# --- modules ------------------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm2d_forward_fused_equals_the_module_then_relu(rng, training):
    arrays = _arrays(rng, np.float64)
    results = []
    for fused in (True, False):
        bn = mr.nn.BatchNorm2d(3).double().train(training)
        bn.weight.data[...], bn.bias.data[...] = arrays["weight"], arrays["bias"]
        bn.running_mean.data[...], bn.running_var.data[...] = arrays["mean"], arrays["var"]
        x = mr.Tensor(channels_last(arrays["x"]), requires_grad=True)
        a = mr.tensor(arrays["addend"], requires_grad=True)
        out = bn.forward_fused(x, a) if fused else F.relu(bn(x) + a)
        out.backward(arrays["grad"])
        results.append([out.numpy(), x.grad, a.grad, bn.weight.grad, bn.bias.grad,
                        bn.running_mean.numpy(), bn.running_var.numpy(), bn.num_batches_tracked.numpy()])
    for mine, ref in zip(*results):
        np.testing.assert_allclose(mine, ref, **SAME[np.float64])


# --- bad input ----------------------------------------------------------------------------

def test_rejects_bad_addend():
    x = mr.randn(4, 3, 2, 2)
    stats = (mr.zeros(3), mr.ones(3))
    with pytest.raises(ValueError, match=r"batch_norm_add_relu: addend must have the input's shape \(4, 3, 2, 2\), "
                                         r"got \(4, 3, 2, 1\)"):
        F.batch_norm_add_relu(x, mr.randn(4, 3, 2, 1), *stats)
    with pytest.raises(ValueError, match=r"addend must have the input's shape"):
        F.batch_norm_add_relu(x, mr.randn(1, 3, 2, 2), *stats)  # no broadcasting
    with pytest.raises(TypeError, match=r"batch_norm_add_relu: addend must be a Tensor, got ndarray"):
        F.batch_norm_add_relu(x, np.zeros((4, 3, 2, 2), np.float32), *stats)
    with pytest.raises(TypeError, match=r"float32 and float64"):
        F.batch_norm_add_relu(x, mr.randn(4, 3, 2, 2, dtype=np.float64), *stats)
    with pytest.raises(TypeError, match=r"addend must be a Tensor, got NoneType"):
        F.batch_norm_add_relu(x, None, *stats)
