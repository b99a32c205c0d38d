"""Finite-difference check of analytic gradients (float64 central differences)."""

from __future__ import annotations

import numpy as np

from .. import backend
from .grad_mode import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with central differences."""


def numerical_vjp(fn, inputs, cotangent, eps: float = 1e-6):
    """d<fn(inputs), cotangent>/d input by central differences, for each input needing grad."""
    grads = []
    for t in inputs:
        if not (isinstance(t, Tensor) and t.requires_grad):
            grads.append(None)
            continue
        xp = backend.get_array_module(t.data)
        t.data = xp.ascontiguousarray(t.data)
        flat = t.data.reshape(-1)  # a view of contiguous data: perturb in place
        g = np.zeros(flat.size, dtype=np.float64)
        for i in range(flat.size):
            original = flat[i].item()
            flat[i] = original + eps
            with no_grad():
                plus = float((backend.as_numpy(fn(*inputs).data) * cotangent).sum())
            flat[i] = original - eps
            with no_grad():
                minus = float((backend.as_numpy(fn(*inputs).data) * cotangent).sum())
            flat[i] = original
            g[i] = (plus - minus) / (2 * eps)
        grads.append(g.reshape(t.shape))
    return grads


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4, seed: int = 0,
              raise_exception: bool = True) -> bool:
    """Compare ``fn``'s backward with float64 central differences.

    A random cotangent ``v`` is drawn; the analytic vector-Jacobian product
    ``v^T J`` (one backward) is compared element by element with the numerical
    derivative of ``<fn(inputs), v>``.

    Args:
        fn: a function of the tensors in ``inputs`` returning one tensor.
        inputs: a sequence of tensors; those with ``requires_grad`` are checked and
            must be float64.
        eps: the finite-difference step.
        atol, rtol: the tolerance ``|analytic - numeric| <= atol + rtol * |numeric|``.
        seed: seed of the random cotangent.
        raise_exception: raise :class:`GradcheckError` on mismatch (else return False).

    Returns:
        True when every gradient matches.
    """
    inputs = list(inputs)
    for t in inputs:
        if isinstance(t, Tensor) and t.requires_grad and t.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs, got {t.dtype}")
    if not any(isinstance(t, Tensor) and t.requires_grad for t in inputs):
        raise ValueError("gradcheck: no input requires grad")
    out = fn(*inputs)
    rng = np.random.default_rng(seed)
    cotangent = rng.standard_normal(out.shape)
    for t in inputs:
        if isinstance(t, Tensor):
            t.grad = None
    xp = backend.get_array_module(out.data)
    out.backward(xp.asarray(cotangent))
    analytic = [backend.as_numpy(t.grad) if isinstance(t, Tensor) and t.requires_grad else None
                for t in inputs]
    numeric = numerical_vjp(fn, inputs, cotangent, eps)
    for index, (a, n) in enumerate(zip(analytic, numeric)):
        if n is None:
            continue
        if a is None:
            a = np.zeros_like(n)
        bad = np.abs(a - n) > atol + rtol * np.abs(n)
        if bad.any():
            worst = np.unravel_index(np.argmax(np.abs(a - n)), n.shape)
            message = (
                f"gradcheck: input {index} gradient mismatch at {len(np.flatnonzero(bad))} of {n.size} "
                f"entries; worst at {tuple(int(i) for i in worst)}: analytic {a[worst]:.10g}, "
                f"numeric {n[worst]:.10g}"
            )
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True
