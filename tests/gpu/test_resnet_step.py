"""A whole ResNet-20 training step on the GPU against the same step on the CPU.

Same seed-0 weights, same batch, same SGD: the loss, every parameter gradient, the
updated parameters, the momentum buffers and the BatchNorm running statistics must
agree. Float64: to round-off. Float32: judged against a float64 run of the same step from
the same weights and data, the GPU must be as accurate as the CPU (within a small factor
of the CPU's float32 error, tensor by tensor; a fixed GPU-vs-CPU tolerance fails where a
reduction cancels, e.g. a BatchNorm bias gradient).
Also: the GPU step issues no host synchronisation (no blocking CUDA call in a profiler
trace, counted inside a region around the steps only).
"""

import json
import os
import tempfile

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import backend, models, optim

from tests.gpu.step_checks import arbitrated_close, host_sync_calls, region_api_calls

pytestmark = pytest.mark.gpu


def _batch(n=8, seed=0):
    # float32-representable inputs: the float64 runs see exactly the float32 runs' data
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


def _run(device, dtype, steps=2, name="resnet20", perm=None):
    """Two SGD steps from the seed-0 weights (created in float32, then cast: the float64 run starts
    from exactly the float32 weights). ``perm`` reorders the batch (the same math, other reduction
    orders); the eval logits come back in the original order."""
    mr.manual_seed(0)
    model = models.create(name).to(dtype)
    model.to(device)
    opt = optim.SGD(optim.param_groups_weight_decay(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True)
    x_np, y_np = _batch()
    if perm is not None:
        x_np, y_np = x_np[perm], y_np[perm]
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
    if perm is not None:
        logits = logits[np.argsort(perm)]
    return losses, grads, state, bufs, logits


def _close(a, b, rtol, what):
    scale = max(float(np.max(np.abs(b))), 1e-30)
    err = float(np.max(np.abs(a - b))) / scale
    assert err <= rtol, f"{what}: max |gpu - cpu| / max |cpu| = {err:.3g} > {rtol:g}"


def _tensors(run):
    """Every float result of a :func:`_run` by name (loss, gradients, state, momentum buffers, logits)."""
    losses, grads, state, bufs, logits = run
    out = {"losses": np.asarray(losses)}
    out.update({f"grad {k}": v for k, v in grads.items()})
    out.update({k: v for k, v in state.items() if v.dtype.kind == "f"})
    out.update({f"momentum buffer {i}": b for i, b in enumerate(bufs)})
    out["eval logits"] = logits
    return out


def assert_as_accurate_as_cpu(gpu32, cpu32, ref64):
    """Per tensor: the float32 GPU run's error against the float64 run is at most a small
    multiple of the float32 CPU run's error (:func:`~tests.gpu.step_checks.arbitrated_close`);
    integer state (``num_batches_tracked``) must be equal."""
    for key in cpu32[2]:
        if cpu32[2][key].dtype.kind != "f":
            np.testing.assert_array_equal(gpu32[2][key], cpu32[2][key], err_msg=key)
    for name in cpu32[1]:
        assert gpu32[1][name].dtype == np.float32, f"grad {name}: {gpu32[1][name].dtype}"
    g, c, r = _tensors(gpu32), _tensors(cpu32), _tensors(ref64)
    assert g.keys() == c.keys() == r.keys()
    for name in r:
        arbitrated_close(g[name], c[name], r[name], name)


def test_resnet20_step_gpu_matches_cpu_float64():
    cpu = _run("cpu", np.float64)
    gpu = _run("cuda", np.float64)
    rtol = 1e-10
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=rtol)
    for name in cpu[1]:
        assert gpu[1][name].dtype == np.float64
        _close(gpu[1][name], cpu[1][name], rtol, f"grad {name}")
    for key in cpu[2]:
        if cpu[2][key].dtype.kind == "f":
            _close(gpu[2][key], cpu[2][key], rtol, key)
        else:
            np.testing.assert_array_equal(gpu[2][key], cpu[2][key], err_msg=key)
    for i, (b_gpu, b_cpu) in enumerate(zip(gpu[3], cpu[3])):
        _close(b_gpu, b_cpu, rtol, f"momentum buffer {i}")
    _close(gpu[4], cpu[4], rtol, "eval logits")


def test_resnet20_step_gpu_float32_as_accurate_as_cpu():
    """Float32: no fixed GPU-vs-CPU tolerance (a BatchNorm bias gradient is a sum of
    N*H*W = 8,192 cancelling float32 terms, reduced in another order on each device), but the GPU
    must be as accurate as the CPU against a float64 run of the same step."""
    ref = _run("cpu", np.float64)
    cpu = _run("cpu", np.float32)
    gpu = _run("cuda", np.float32)
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=2e-4)  # the losses: well-conditioned
    assert_as_accurate_as_cpu(gpu, cpu, ref)


REGION = "minires_measured_region"


def _sync_calls(fn):
    """CUDA runtime/driver calls made while ``fn()`` runs, and the blocking ones among them (stream/device/
    event syncs, synchronous copies), from a CUPTI-based ``torch.profiler`` trace.

    Only calls inside a ``record_function`` region around ``fn()`` count: ``torch.profiler``'s own
    ``__exit__`` calls ``torch.cuda.synchronize()``, a ``cudaDeviceSynchronize`` that every trace
    contains (the one this test used to blame on the training step)."""
    pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with record_function(REGION):
            fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    api = region_api_calls(events, REGION)
    return api, host_sync_calls(api)


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
        # warm-up as in benchmarks/gpu_speed.py: compile kernels, allocate momentum buffers, create the
        # cuBLAS handle, let the pool and the fused SGD's pointer table reach their steady state
        for _ in range(2):
            step()
        backend.synchronize()
        # the detector must see a host read (else it is blind and the test says nothing)
        api, control = _sync_calls(lambda: float(losses[-1].item()))
        if not control:
            pytest.skip(f"the profiler does not record CuPy's synchronising calls inside the region "
                        f"({len(api)} API events seen there)")
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
