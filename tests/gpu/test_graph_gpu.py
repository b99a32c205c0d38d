"""CUDA-graph replay of a step (minires.kernels.graph_gpu) against eager execution."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import backend, models, optim
from minires.kernels.graph_gpu import CUBLAS_CAPTURE_REFUSAL, CUBLAS_UNSUPPORTED, GraphedStep

pytestmark = pytest.mark.gpu


def test_graphed_step_replays_like_eager():
    import cupy as cp

    def make():
        state = cp.zeros(5, cp.float32)

        def fn(x):
            state[...] = state * 0.5 + x.sum(axis=0)  # in-place state, like parameters
            return (state * 2.0, x.max())
        return state, fn

    rng = np.random.default_rng(0)
    batches = [cp.asarray(rng.standard_normal((3, 5)).astype(np.float32)) for _ in range(6)]
    state_e, fn_e = make()
    eager = [tuple(o.get() for o in fn_e(b)) for b in batches]
    state_g, fn_g = make()
    step = GraphedStep(fn_g)
    graphed = [tuple(o.get() for o in step(b)) for b in batches]
    assert step.error is None, step.error
    assert step.replays == 5 and step.eager_calls == 1
    for (a1, b1), (a2, b2) in zip(eager, graphed):
        np.testing.assert_array_equal(a2, a1)
        np.testing.assert_array_equal(b2, b1)
    np.testing.assert_array_equal(state_g.get(), state_e.get())


def test_graphed_step_falls_back_when_capture_fails():
    import cupy as cp

    def fn(x):
        return (x * float(x.sum()),)  # a host read: not capturable

    step = GraphedStep(fn)
    x = cp.arange(4, dtype=cp.float32)
    for _ in range(3):
        np.testing.assert_array_equal(step(x)[0].get(), np.arange(4) * 6.0)
    assert step.error is not None and step.replays == 0 and step.eager_calls == 3


def skip_if_cublas_refused(error):
    """Skip (after the caller's fallback checks) when capture failed on exactly CuPy's refusal of
    cuBLAS during stream capture (verified with CuPy 14.2.0): a known limitation of the binding,
    not a minires bug. Any other capture error is left to fail the test."""
    if (error is not None and error.startswith(CUBLAS_UNSUPPORTED)
            and error.endswith(f"NotImplementedError: {CUBLAS_CAPTURE_REFUSAL}")):
        pytest.skip(f"CUDA-graph capture of a step with GEMMs is unsupported by CuPy's cuBLAS binding "
                    f"(CuPy raised NotImplementedError: {CUBLAS_CAPTURE_REFUSAL}); the eager fallback was checked")


def test_graphed_resnet20_steps_equal_eager_steps():
    from minires.ops.loss import set_gpu_target_checks

    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((16, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 16)) for _ in range(5)]
    runs = {}
    previous = set_gpu_target_checks(False)
    try:
        for mode in ("eager", "graph"):
            mr.manual_seed(0)
            model = models.create("resnet20").to("cuda")
            opt = optim.SGD(optim.param_groups_weight_decay(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True)

            def fn(x, y):
                logits = model(mr.Tensor(x))
                loss = F.cross_entropy(logits, mr.Tensor(y))
                opt.zero_grad()
                loss.backward()
                opt.step()
                return (loss.data,)

            step = GraphedStep(fn) if mode == "graph" else fn
            losses = []
            for i, (x, y) in enumerate(batches):
                if i == 3:  # a learning-rate change: a new variant, a second capture
                    for g in opt.param_groups:
                        g["lr"] = 0.01
                args = (backend.to_device(x, "cuda"), backend.to_device(y, "cuda"))
                out = step(*args, variant=opt.param_groups[0]["lr"]) if mode == "graph" else step(*args)
                losses.append(float(out[0]))
            if mode == "graph":
                graphed = step
            runs[mode] = (losses, {k: backend.as_numpy(v) for k, v in model.state_dict().items()})
    finally:
        set_gpu_target_checks(previous)
    # replayed or (after a failed capture) eager: the same training run either way
    np.testing.assert_allclose(runs["graph"][0], runs["eager"][0], rtol=1e-5)
    for k, v in runs["eager"][1].items():
        np.testing.assert_allclose(runs["graph"][1][k], v, rtol=1e-4, atol=1e-5, err_msg=k)
    if graphed.error is not None:
        assert graphed.replays == 0 and graphed.eager_calls == 5
        assert graphed.unsupported == graphed.error.startswith(CUBLAS_UNSUPPORTED)
    skip_if_cublas_refused(graphed.error)
    assert graphed.error is None, graphed.error
    assert graphed.replays == 3 and graphed.eager_calls == 2
