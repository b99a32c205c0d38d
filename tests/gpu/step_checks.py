"""Comparison helpers of the GPU step tests, kept free of CuPy so that their logic is tested on the CPU.

* :func:`arbitrated_close`: a float32 GPU result is judged against a float64 run of the same
  computation, next to the float32 CPU result: the GPU must be as accurate as the CPU path
  (not equal to it: two float32 reductions in different orders legitimately disagree by
  more than a fixed tolerance where the reduced sum cancels).
* :func:`region_api_calls` / :func:`host_sync_calls`: the CUDA runtime/driver calls of a
  ``torch.profiler`` chrome trace that fall inside one ``record_function`` region, so that
  the profiler's own calls outside the region (``torch.profiler``'s ``__exit__`` calls
  ``torch.cuda.synchronize()``, a ``cudaDeviceSynchronize`` recorded in every trace) are
  not blamed on the code under test.
"""

from __future__ import annotations

import re

import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)

#: CUDA API calls that block the host: stream/device/event synchronisation, synchronous copies
SYNC_CALL = re.compile(r"Synchronize|^cudaMemcpy$|^cudaMemcpy2D$|^cuMemcpyDtoH(_v2)?$|^cuMemcpy$")


def arbitration_errors(candidate, baseline, reference) -> tuple:
    """Max-abs errors of ``candidate`` and ``baseline`` against ``reference``, and its max-abs scale.

    Args:
        candidate: the float32 result under test (e.g. the GPU's), as a NumPy array.
        baseline: the float32 result of the trusted path (e.g. the CPU's).
        reference: the float64 result of the same computation from the same inputs.

    Returns:
        ``(err_candidate, err_baseline, scale)`` as Python floats.
    """
    candidate, baseline, reference = (np.asarray(a) for a in (candidate, baseline, reference))
    if not (candidate.shape == baseline.shape == reference.shape):
        raise ValueError(f"arbitration: shapes differ: candidate {candidate.shape}, baseline {baseline.shape}, "
                         f"reference {reference.shape}")
    ref = reference.astype(np.float64)
    err_c = float(np.max(np.abs(candidate.astype(np.float64) - ref), initial=0.0))
    err_b = float(np.max(np.abs(baseline.astype(np.float64) - ref), initial=0.0))
    scale = float(np.max(np.abs(ref), initial=0.0))
    return err_c, err_b, scale


def arbitrated_close(candidate, baseline, reference, what: str, factor: float = 4.0, floor_ulps: float = 16.0):
    """Assert that ``candidate`` is at most ``factor`` times less accurate than ``baseline``.

    Both are float32 results of the same computation; ``reference`` is that computation in
    float64 from the same (float32-representable) inputs. With ``e(a) = max |a - reference|``
    the check is ``e(candidate) <= factor * e(baseline) + floor_ulps * eps32 * max |reference|``;
    the absolute floor (a few float32 ulps of the tensor's magnitude) only matters when the
    baseline happens to be (nearly) exact.

    Args:
        candidate: float32 result under test (the GPU's).
        baseline: float32 result of the trusted path (the CPU's).
        reference: float64 result.
        what: the tensor's name, for the failure message.
        factor: how many times the baseline's error the candidate may have.
        floor_ulps: the absolute floor in float32 epsilons of ``max |reference|``.

    Returns:
        ``(err_candidate, err_baseline, scale)``.

    Raises:
        AssertionError: naming the tensor and both errors when the candidate is less accurate.
    """
    err_c, err_b, scale = arbitration_errors(candidate, baseline, reference)
    allowed = factor * err_b + floor_ulps * F32_EPS * scale
    assert err_c <= allowed, (
        f"{what}: float32 GPU error vs float64 {err_c:.3g} > {factor:g} x CPU float32 error {err_b:.3g} "
        f"+ {floor_ulps:g} eps32 x max|ref| {scale:.3g} (allowed {allowed:.3g})")
    return err_c, err_b, scale


def region_api_calls(events, region: str) -> list:
    """The CUDA runtime/driver API events that start inside the first host-side ``region`` span.

    Args:
        events: ``traceEvents`` of a ``torch.profiler`` chrome trace.
        region: the name given to ``torch.profiler.record_function`` around the measured code.

    Returns:
        The API events (dicts) whose start lies within the region's ``[ts, ts + dur]``.

    Raises:
        LookupError: when the trace has no complete (``"ph": "X"``) event of that name.
    """
    # the host-side span (cat "user_annotation"), not its GPU-timeline twin ("gpu_user_annotation"),
    # which starts with the first kernel and may end after the profiler's own exit synchronize
    spans = [e for e in events if e.get("name") == region and e.get("ph") == "X"
             and "gpu" not in str(e.get("cat", "")).lower()]
    if not spans:
        raise LookupError(f"no {region!r} span in the trace ({len(events)} events)")
    start = float(spans[0]["ts"])
    end = start + float(spans[0].get("dur", 0.0))
    return [e for e in events
            if str(e.get("cat", "")).lower() in ("cuda_runtime", "cuda_driver")
            and start <= float(e.get("ts", 0.0)) <= end]


def host_sync_calls(api_events) -> list:
    """Names of the blocking calls (:data:`SYNC_CALL`) among ``api_events``."""
    return [str(e.get("name")) for e in api_events if SYNC_CALL.search(str(e.get("name", "")))]
