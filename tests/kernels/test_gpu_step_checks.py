"""CPU tests of the comparison logic the GPU tests rely on (tests/gpu/step_checks.py) and of the
CUDA-graph capture-error classification (minires.kernels.graph_gpu): a check that cannot fail
proves nothing, so each one is shown to fail on a perturbed "GPU" result.

They live here, not under tests/gpu, because tests/conftest.py skips every test whose keywords
contain "gpu" without a GPU, and a test's directory name is one of its keywords."""

import numpy as np
import pytest

from minires.kernels.graph_gpu import (CUBLAS_CAPTURE_REFUSAL, CUBLAS_UNSUPPORTED, describe_capture_error,
                                       is_cublas_capture_refusal)
from tests.gpu.step_checks import F32_EPS, arbitrated_close, host_sync_calls, region_api_calls
from tests.gpu.test_resnet_step import _run, assert_as_accurate_as_cpu


def _cancelling_sum_case(rng):
    """Per-channel sums of 8,192 float32 terms that cancel, like a BatchNorm bias gradient."""
    terms = rng.standard_normal((16, 8192)) * 0.05
    terms -= terms.mean(axis=1, keepdims=True) * 0.999  # sums ~1e-3 of the terms' total magnitude
    t32 = terms.astype(np.float32)
    ref = t32.astype(np.float64).sum(axis=1)
    cpu = t32.sum(axis=1)  # pairwise summation
    other = np.zeros(16, np.float32)  # sequential summation: another order
    for j in range(0, 8192, 256):
        other += t32[:, j:j + 256].sum(axis=1, dtype=np.float32)
    return other, cpu, ref


def test_arbitration_accepts_another_summation_order(rng):
    other, cpu, ref = _cancelling_sum_case(rng)
    err_c, err_b, scale = arbitrated_close(other, cpu, ref, "sum")
    assert err_b > 0 and err_c <= 4 * err_b + 16 * F32_EPS * scale
    arbitrated_close(cpu, cpu, ref, "same")  # equal results pass
    arbitrated_close(ref.astype(np.float32), cpu, ref, "rounded reference")  # the best float32 answer passes


def test_arbitration_rejects_a_less_accurate_result(rng):
    other, cpu, ref = _cancelling_sum_case(rng)
    err_b = float(np.max(np.abs(cpu - ref)))
    worse = cpu.astype(np.float64)
    worse[3] += 10 * err_b + 32 * F32_EPS * float(np.max(np.abs(ref)))
    with pytest.raises(AssertionError, match="bn1.bias: float32 GPU error vs float64"):
        arbitrated_close(worse.astype(np.float32), cpu, ref, "bn1.bias")
    with pytest.raises(ValueError, match="shapes differ"):
        arbitrated_close(cpu[:3], cpu, ref, "x")


def test_arbitration_floor_when_the_baseline_is_exact():
    ref = np.array([1.0, -2.0, 0.5])
    exact = ref.astype(np.float32)
    arbitrated_close(exact + np.float32(4 * F32_EPS), exact, ref, "x")  # 4 ulps of max|ref| < 16-ulp floor
    with pytest.raises(AssertionError):
        arbitrated_close(exact + np.float32(1e-5), exact, ref, "x")


def test_resnet20_arbitration_on_cpu_runs():
    """The test_resnet_step float32 check on CPU runs: the CPU float32 result passes as its own
    "GPU", and fails once one tensor (a BatchNorm bias) is made less accurate."""
    ref = _run("cpu", np.float64)
    cpu = _run("cpu", np.float32)
    assert_as_accurate_as_cpu(cpu, cpu, ref)
    state = dict(cpu[2])
    bias = state["bn1.bias"].astype(np.float64)
    err = float(np.max(np.abs(bias - ref[2]["bn1.bias"])))
    bias[0] += 5 * err + 32 * F32_EPS * float(np.max(np.abs(ref[2]["bn1.bias"])))
    state["bn1.bias"] = bias.astype(np.float32)
    perturbed = (cpu[0], cpu[1], state, cpu[3], cpu[4])
    with pytest.raises(AssertionError, match="bn1.bias"):
        assert_as_accurate_as_cpu(perturbed, cpu, ref)


def _event(name, ts, dur=1.0, cat="cuda_runtime"):
    return {"name": name, "ph": "X", "cat": cat, "ts": ts, "dur": dur}


def test_region_filter_ignores_the_profilers_own_synchronize():
    events = [
        _event("minires_measured_region", 100.0, 50.0, cat="user_annotation"),
        _event("cudaLaunchKernel", 110.0),
        _event("cuLaunchKernel", 120.0, cat="cuda_driver"),
        _event("cudaDeviceSynchronize", 400.0),  # torch.profiler's __exit__, after the region
        _event("cudaStreamSynchronize", 20.0),  # before the region
    ]
    api = region_api_calls(events, "minires_measured_region")
    assert [e["name"] for e in api] == ["cudaLaunchKernel", "cuLaunchKernel"]
    assert host_sync_calls(api) == []
    events.append(_event("cudaStreamSynchronize", 140.0))  # a sync inside the step is caught
    events.append(_event("cudaMemcpy", 145.0))
    events.append(_event("cudaMemcpyAsync", 146.0))  # asynchronous: not a host sync
    assert host_sync_calls(region_api_calls(events, "minires_measured_region")) == [
        "cudaStreamSynchronize", "cudaMemcpy"]
    # the GPU-timeline twin of the region (listed first here) must not be taken for it
    gpu_twin = _event("minires_measured_region", 130.0, 400.0, cat="gpu_user_annotation")
    assert host_sync_calls(region_api_calls([gpu_twin] + events[:4], "minires_measured_region")) == []
    with pytest.raises(LookupError, match="no 'other' span"):
        region_api_calls(events, "other")


def test_cublas_capture_refusal_is_recognised_exactly():
    refusal = NotImplementedError(CUBLAS_CAPTURE_REFUSAL)
    assert is_cublas_capture_refusal(refusal)
    text = describe_capture_error(refusal)
    assert text.startswith(CUBLAS_UNSUPPORTED) and text.endswith(f"NotImplementedError: {CUBLAS_CAPTURE_REFUSAL}")
    for other in (RuntimeError(CUBLAS_CAPTURE_REFUSAL), NotImplementedError("something else"),
                  NotImplementedError(CUBLAS_CAPTURE_REFUSAL + " for now"), ValueError("x")):
        assert not is_cublas_capture_refusal(other)
        assert describe_capture_error(other) == f"{type(other).__name__}: {other}"
