"""A whole ResNet-20 training step on the GPU against the same step on the CPU.

Same seed-0 weights, same batch, same SGD: the loss, every parameter gradient, the
updated parameters, the momentum buffers and the BatchNorm running statistics must
agree (float64: to round-off; float32: to a few float32 ulps of accumulated error).
Also: the GPU step issues no host synchronisation (no blocking CUDA call in a profiler trace).
"""

import json
import os
import re
import tempfile

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import backend, models, optim

pytestmark = pytest.mark.gpu


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32)), rng.integers(0, 10, n).astype(np.int64)


def _run(device, dtype, steps=2, name="resnet20"):
    mr.manual_seed(0)
    model = models.create(name).to(dtype)
    model.to(device)
    opt = optim.SGD(optim.param_groups_weight_decay(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True)
    x_np, y_np = _batch()
    x = mr.Tensor(backend.to_device(x_np.astype(dtype), device))
    y = mr.Tensor(backend.to_device(y_np, device))
    losses, grads = [], None
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if grads is None:
            grads = {n: backend.as_numpy(p.grad) for n, p in model.named_parameters()}
        opt.step()
        losses.append(float(loss.item()))
    state = {k: backend.as_numpy(v) for k, v in model.state_dict().items()}
    bufs = [backend.as_numpy(opt.state[p]["momentum_buffer"]) for g in opt.param_groups for p in g["params"]]
    model.eval()
    with mr.no_grad():
        logits = backend.as_numpy(model(x).data)
    return losses, grads, state, bufs, logits


def _close(a, b, rtol, what):
    scale = max(float(np.max(np.abs(b))), 1e-30)
    err = float(np.max(np.abs(a - b))) / scale
    assert err <= rtol, f"{what}: max |gpu - cpu| / max |cpu| = {err:.3g} > {rtol:g}"


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
def test_resnet20_step_gpu_matches_cpu(dtype, rtol):
    cpu = _run("cpu", dtype)
    gpu = _run("cuda", dtype)
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=rtol)
    for name in cpu[1]:
        assert gpu[1][name].dtype == dtype
        _close(gpu[1][name], cpu[1][name], rtol, f"grad {name}")
    for key in cpu[2]:
        if cpu[2][key].dtype.kind == "f":
            _close(gpu[2][key], cpu[2][key], rtol, key)
        else:
            np.testing.assert_array_equal(gpu[2][key], cpu[2][key], err_msg=key)
    for i, (b_gpu, b_cpu) in enumerate(zip(gpu[3], cpu[3])):
        _close(b_gpu, b_cpu, rtol, f"momentum buffer {i}")
    _close(gpu[4], cpu[4], rtol, "eval logits")


SYNC_CALL = re.compile(r"Synchronize|^cudaMemcpy$|^cudaMemcpy2D$|^cuMemcpyDtoH(_v2)?$|^cuMemcpy$")


def _sync_calls(fn):
    """CUDA runtime/driver calls that block the host (stream/device/event syncs, synchronous copies) in ``fn()``,
    as recorded by the CUPTI-based ``torch.profiler``."""
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    del torch
    api = [e for e in events if str(e.get("cat", "")).lower() in ("cuda_runtime", "cuda_driver")]
    return api, [e["name"] for e in api if SYNC_CALL.search(str(e.get("name", "")))]


def test_training_step_has_no_host_synchronisation():
    from minires.ops.loss import set_gpu_target_checks

    mr.manual_seed(0)
    model = models.create("resnet20").to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x_np, y_np = _batch()
    x = mr.Tensor(backend.to_device(x_np.astype(np.float32), "cuda"))
    y = mr.Tensor(backend.to_device(y_np, "cuda"))
    losses = []

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss)

    previous = set_gpu_target_checks(False)
    try:
        step()  # first step: compiles kernels, allocates momentum buffers
        backend.synchronize()
        # the detector must see a host read (else it is blind and the test says nothing)
        api, control = _sync_calls(lambda: float(losses[-1].item()))
        if not control:
            pytest.skip(f"the profiler does not record CuPy's synchronising calls ({len(api)} API events seen)")
        api, syncs = _sync_calls(lambda: [step() for _ in range(2)])
    finally:
        set_gpu_target_checks(previous)
    assert any("aunch" in str(e.get("name", "")) for e in api), "no kernel launches recorded in the step"
    assert syncs == [], f"host synchronisations inside a training step: {syncs}"
    assert np.isfinite(float(losses[-1].item()))


def test_target_check_still_raises_on_gpu_by_default():
    logits = mr.Tensor(backend.to_device(np.zeros((2, 3), np.float32), "cuda"))
    target = mr.Tensor(backend.to_device(np.array([0, 5]), "cuda"))
    with pytest.raises(ValueError, match="out of range"):
        F.cross_entropy(logits, target)
