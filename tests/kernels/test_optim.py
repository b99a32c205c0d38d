"""Fused multi-tensor SGD kernel: NumPy twin vs the reference update and torch.optim.SGD; GPU twin vs CPU."""

import itertools

import numpy as np
import pytest

from minires.kernels.optim import CHUNK, sgd_multi_tensor, sgd_multi_tensor_cpu
from minires.optim.sgd import sgd_update_

# (momentum, dampening, weight_decay, nesterov, maximize): a grid that visits every branch
OPTIONS = [
    (m, d, wd, n, mx)
    for m, d, wd, n, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (0.0, 5e-4), (False, True), (False, True))
    if not (n and (m == 0 or d != 0))
]
SHAPES = [(3,), (4, 5), (2, 3, 3, 3), (1,)]


def _arrays(rng, dtype, shapes=SHAPES):
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(3)]
    return params, grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum,dampening,weight_decay,nesterov,maximize", OPTIONS)
def test_cpu_twin_equals_reference_update_bitwise(rng, dtype, momentum, dampening, weight_decay, nesterov,
                                                   maximize):
    options = dict(lr=0.1, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                   nesterov=nesterov, maximize=maximize)
    params, grads = _arrays(rng, dtype)
    ref = [p.copy() for p in params]
    bufs, ref_bufs = [None] * len(params), [None] * len(params)
    for step_grads in grads:  # three steps: first-step buffer copy, then the running update
        bufs = sgd_multi_tensor_cpu(params, step_grads, bufs, **options)
        ref_bufs = [sgd_update_(p, g, b, **options) for p, g, b in zip(ref, step_grads, ref_bufs)]
    for p, r in zip(params, ref):
        assert p.dtype == dtype
        np.testing.assert_array_equal(p, r)
    for b, rb in zip(bufs, ref_bufs):
        if momentum == 0:
            assert b is None and rb is None
        else:
            np.testing.assert_array_equal(b, rb)


@pytest.mark.parametrize("momentum,dampening,weight_decay,nesterov,maximize", OPTIONS)
def test_cpu_twin_matches_torch_sgd(rng, momentum, dampening, weight_decay, nesterov, maximize):
    torch = pytest.importorskip("torch")
    options = dict(momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                   maximize=maximize)
    params, grads = _arrays(rng, np.float64)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = torch.optim.SGD(tparams, lr=0.05, foreach=False, **options)
    bufs = [None] * len(params)
    for step_grads in grads:
        bufs = sgd_multi_tensor_cpu(params, step_grads, bufs, lr=0.05, **options)
        for tp, g in zip(tparams, step_grads):
            tp.grad = torch.tensor(g)
        opt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_first_step_buffer_is_a_copy_not_the_gradient(rng):
    params, grads = _arrays(rng, np.float32)
    g0 = [g.copy() for g in grads[0]]
    bufs = sgd_multi_tensor(params, grads[0], [None] * len(params), lr=0.1, momentum=0.9)
    for b, g, orig in zip(bufs, grads[0], g0):
        assert b is not g
        np.testing.assert_array_equal(b, orig)
        np.testing.assert_array_equal(g, orig)  # gradients are never written


def test_bad_lists_raise(rng):
    params, grads = _arrays(rng, np.float32)
    with pytest.raises(ValueError, match="as many gradients"):
        sgd_multi_tensor(params, grads[0][:-1], [None] * len(params), lr=0.1)
    with pytest.raises(ValueError, match="has shape"):
        sgd_multi_tensor(params[:1], [np.zeros((9,), np.float32)], [None], lr=0.1)
    with pytest.raises(TypeError, match="dtype"):
        sgd_multi_tensor(params[:1], [grads[0][0].astype(np.float64)], [None], lr=0.1)


# --- GPU twin --------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum,dampening,weight_decay,nesterov,maximize", OPTIONS)
def test_gpu_twin_equals_cpu_twin_bitwise(rng, dtype, momentum, dampening, weight_decay, nesterov, maximize):
    import cupy as cp

    options = dict(lr=0.1, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                   nesterov=nesterov, maximize=maximize)
    # sizes around the chunk boundary, so blocks of one tensor and of neighbours are exercised
    shapes = SHAPES + [(CHUNK,), (CHUNK + 1,), (2 * CHUNK + 17,), (7, 3, 3, 3)]
    params, grads = _arrays(rng, dtype, shapes)
    gparams = [cp.asarray(p) for p in params]
    bufs, gbufs = [None] * len(params), [None] * len(params)
    for step_grads in grads:
        bufs = sgd_multi_tensor(params, step_grads, bufs, **options)
        gbufs = sgd_multi_tensor(gparams, [cp.asarray(g) for g in step_grads], gbufs, **options)
    for p, gp in zip(params, gparams):
        np.testing.assert_array_equal(gp.get(), p)
    if momentum:
        for b, gb in zip(bufs, gbufs):
            np.testing.assert_array_equal(gb.get(), b)


@pytest.mark.gpu
def test_gpu_twin_non_contiguous_gradient(rng):
    import cupy as cp

    p = rng.standard_normal((6, 5)).astype(np.float32)
    g = rng.standard_normal((5, 6)).astype(np.float32).T  # a transposed view
    gp = cp.asarray(p)
    sgd_multi_tensor([p], [g], [None], lr=0.1, momentum=0.9, weight_decay=1e-3)
    sgd_multi_tensor([gp], [cp.asarray(g.T).T], [None], lr=0.1, momentum=0.9, weight_decay=1e-3)
    np.testing.assert_array_equal(gp.get(), p)
