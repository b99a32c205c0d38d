"""One helper that runs an op in minires and in PyTorch and compares everything.

Usage (one line per op)::

    import minires.functional as F
    from tests.torch_parity import assert_torch_parity

    torch = pytest.importorskip("torch")
    assert_torch_parity(F.conv2d, torch.nn.functional.conv2d, [x, w, b], stride=2, padding=1)

``x, w, b`` are NumPy arrays (any float dtype; they are cast to ``dtype``). Both
functions get the same positional inputs (as minires / torch tensors) and the same extra
keyword arguments. The helper compares the forward output and, after one backward pass
with the same random cotangent on both sides, the gradient of every floating input.

Tolerances (``|mine - torch| <= atol + rtol * |torch|`` element by element):

- float32: ``rtol=2e-4``, ``atol=1e-5 * scale``
- float64: ``rtol=1e-9``, ``atol=1e-12 * scale``

where ``scale = max(1, max |torch value|)`` of the array compared, so entries that
cancel to nearly zero are judged against the size of the array and not against
themselves. NaN must appear at the same positions on both sides.

The first call sets ``torch.set_num_threads(1)``: parity problems are tiny, and PyTorch's
thread pool only adds contention on a shared CPU.
"""

from __future__ import annotations

import numpy as np

import minires as mr
from minires import backend

DEFAULT_TOLERANCES = {
    np.dtype(np.float32): (2e-4, 1e-5),
    np.dtype(np.float64): (1e-9, 1e-12),
}


def _compare(name: str, mine: np.ndarray, ref: np.ndarray, rtol: float, atol_unit: float) -> None:
    """Raise AssertionError with the worst entry when ``mine`` and ``ref`` disagree."""
    if mine.shape != ref.shape:
        raise AssertionError(f"{name}: shape {mine.shape} != torch shape {ref.shape}")
    if mine.dtype != ref.dtype:
        raise AssertionError(f"{name}: dtype {mine.dtype} != torch dtype {ref.dtype}")
    nan_mine, nan_ref = np.isnan(mine), np.isnan(ref)
    if not np.array_equal(nan_mine, nan_ref):
        raise AssertionError(
            f"{name}: NaN at {int(nan_mine.sum())} entries in minires but {int(nan_ref.sum())} in torch "
            "(or at different positions)"
        )
    finite_ref = ref[~nan_ref]
    scale = max(1.0, float(np.abs(finite_ref).max())) if finite_ref.size else 1.0
    atol = atol_unit * scale
    with np.errstate(invalid="ignore"):
        diff = np.where(nan_ref, 0.0, np.abs(mine.astype(np.float64) - ref.astype(np.float64)))
        bad = diff > atol + rtol * np.abs(np.where(nan_ref, 0.0, ref.astype(np.float64)))
        # infinities must match exactly (inf - inf is nan, which the line above ignores)
        bad |= np.isinf(ref) & (mine != ref)
    if bad.any():
        worst = np.unravel_index(int(np.argmax(np.where(bad, diff, -1.0))), ref.shape)
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {ref.size} entries differ from torch "
            f"(rtol={rtol:g}, atol={atol:.3g}); worst at {tuple(int(i) for i in worst)}: "
            f"minires {mine[worst]!r}, torch {ref[worst]!r}, |diff| {diff[worst]:.3g}"
        )


def assert_torch_parity(mr_fn, torch_fn, inputs, *, dtype=np.float32, requires_grad=None,
                        rtol: float | None = None, atol: float | None = None, check_grad: bool = True,
                        device: str = "cpu", seed: int = 0, **kwargs):
    """Check that ``mr_fn`` and ``torch_fn`` agree in forward and in every input gradient.

    Args:
        mr_fn: the minires function, called as ``mr_fn(*mr_inputs, **kwargs)``.
        torch_fn: the PyTorch function, called as ``torch_fn(*torch_inputs, **kwargs)``.
        inputs: positional inputs. NumPy floating arrays become tensors of ``dtype``;
            NumPy integer arrays become int64 tensors (targets); ``None`` and anything else
            (Python numbers, tuples) are passed unchanged to both functions.
        dtype: ``np.float32`` or ``np.float64``: the precision both sides compute in.
        requires_grad: one bool per input (default: every floating array requires grad).
        rtol: relative tolerance (default from ``dtype``, see module docstring).
        atol: absolute tolerance per unit of scale (default from ``dtype``).
        check_grad: also run backward with a random cotangent and compare the gradients.
        device: where the minires side runs (``'cpu'`` or ``'cuda'``); torch runs on CPU.
        seed: seed of the random cotangent.
        **kwargs: keyword arguments given to both functions (``stride=2``, ...).

    Returns:
        ``(output, grads)``: minires' output and gradients as NumPy arrays (``grads`` has
        ``None`` for inputs without a gradient).

    Raises:
        AssertionError: naming the output or input that differs, the worst entry and both values.
    """
    import torch  # noqa: PLC0415  (test-only dependency)

    # the oracle runs tiny problems: one thread avoids oversubscribing a shared 2-core machine
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    dtype = np.dtype(dtype)
    default_rtol, default_atol = DEFAULT_TOLERANCES[dtype]
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    inputs = list(inputs)
    if requires_grad is None:
        requires_grad = [isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in inputs]
    if len(requires_grad) != len(inputs):
        raise ValueError(f"requires_grad has {len(requires_grad)} entries for {len(inputs)} inputs")

    mr_inputs, torch_inputs = [], []
    for array, needs_grad in zip(inputs, requires_grad):
        if isinstance(array, np.ndarray):
            if array.dtype.kind == "f":
                array = np.ascontiguousarray(array, dtype=dtype)
            elif array.dtype.kind in "iu":
                array = np.ascontiguousarray(array, dtype=np.int64)
            mr_inputs.append(mr.tensor(array.copy(), requires_grad=bool(needs_grad), device=device))
            torch_inputs.append(torch.tensor(array.copy(), requires_grad=bool(needs_grad)))
        else:
            mr_inputs.append(array)
            torch_inputs.append(array)

    mr_out = mr_fn(*mr_inputs, **kwargs)
    torch_out = torch_fn(*torch_inputs, **kwargs)
    mine = backend.as_numpy(mr_out.data)
    ref = torch_out.detach().numpy()
    if mr_out.device != mr.backend.parse_device(device):
        raise AssertionError(f"output: on device {mr_out.device}, expected {device}")
    _compare("output", mine, ref, rtol, atol)

    grads = [None] * len(inputs)
    if not (check_grad and any(requires_grad)):
        return mine, grads
    rng = np.random.default_rng(seed)
    cotangent = rng.standard_normal(ref.shape).astype(ref.dtype)
    mr_out.backward(backend.xp_for(mr_out.device).asarray(cotangent))
    torch_out.backward(torch.from_numpy(cotangent))
    for index, (mt, tt, needs_grad) in enumerate(zip(mr_inputs, torch_inputs, requires_grad)):
        if not needs_grad:
            continue
        ref_grad = tt.grad.numpy() if tt.grad is not None else np.zeros(tt.shape, dtype=dtype)
        if mt.grad is None:
            if np.any(ref_grad != 0):
                raise AssertionError(f"input {index}: minires gave no gradient, torch a nonzero one")
            continue
        mine_grad = backend.as_numpy(mt.grad)
        _compare(f"grad of input {index}", mine_grad, ref_grad, rtol, atol)
        grads[index] = mine_grad
    return mine, grads


def random_inputs(rng: np.random.Generator, *shapes, dtype=np.float64):
    """Standard-normal NumPy arrays of the given shapes (``None`` passes through)."""
    return [None if s is None else rng.standard_normal(s).astype(dtype) for s in shapes]


__all__ = ["assert_torch_parity", "random_inputs", "DEFAULT_TOLERANCES"]
