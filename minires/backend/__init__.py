"""Array-module choice: NumPy on the CPU, CuPy on the GPU.

Only this package and :mod:`minires.kernels` name ``cupy``. Everything above writes
``xp = get_array_module(x)`` where NumPy and CuPy agree and calls a kernel where they
don't.

Devices are strings: ``'cpu'`` and ``'cuda'`` / ``'cuda:N'``. The setting ``device`` of
:mod:`minires.config` (environment variable ``MINIRES_DEVICE``) sets the default device.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from .. import config

_cupy = None
_cupy_error: str | None = None
_cupy_checked = False

CUPY_INSTALL_HINT = (
    "install CuPy for your CUDA version: pip install 'minires[cuda12]' or "
    "pip install 'minires[cuda13]' (cupy-cuda12x / cupy-cuda13x), on a machine with an NVIDIA GPU"
)


def _load_cupy():
    """Import CuPy once, remembering why it failed if it did."""
    global _cupy, _cupy_error, _cupy_checked
    if _cupy_checked:
        return _cupy
    _cupy_checked = True
    try:
        import cupy  # noqa: PLC0415

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("CuPy found no CUDA device")
        _cupy = cupy
    except Exception as exc:  # ImportError, CUDA driver errors, no device
        _cupy = None
        _cupy_error = f"{type(exc).__name__}: {exc}"
    return _cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    return _load_cupy() is not None


def cupy_module():
    """Return the ``cupy`` module or raise a clear error saying what to install."""
    cp = _load_cupy()
    if cp is None:
        raise RuntimeError(
            f"device 'cuda' requested but CuPy or a GPU is not available ({_cupy_error}); "
            + CUPY_INSTALL_HINT
        )
    return cp


def parse_device(device) -> str:
    """Normalise a device spec to ``'cpu'`` or ``'cuda:N'``.

    Args:
        device: ``None`` (the default device), ``'cpu'``, ``'cuda'``, ``'cuda:N'``.

    Raises:
        ValueError: for anything else.
    """
    return default_device() if device is None else config.normalize_device(device)


def names_device(value) -> bool:
    """Whether ``value`` is a string that names a device (``'cpu'``, ``'cuda'``, ``'gpu'``, ``'cuda:N'``).

    Tells a device from a dtype where an argument may be either (``.to(...)``); the
    string is then checked by :func:`parse_device`.
    """
    return isinstance(value, str) and value.split(":")[0].strip().lower() in ("cpu", "cuda", "gpu")


def default_device() -> str:
    """The default device: ``minires.config.get('device')`` (``MINIRES_DEVICE``, default ``'cpu'``)."""
    return config.get("device")


def is_cupy_array(x) -> bool:
    """True when ``x`` is a CuPy ndarray (without importing CuPy if it never was)."""
    if _cupy is not None:
        return isinstance(x, _cupy.ndarray)
    cupy = sys.modules.get("cupy")  # CuPy imported by the caller before minires looked
    if cupy is not None and isinstance(x, cupy.ndarray):
        _load_cupy()
        return True
    return False


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for a in arrays:
        if is_cupy_array(a):
            return _cupy if _cupy is not None else sys.modules["cupy"]
    return np


def array_device(x) -> str:
    """Device string of an array: ``'cpu'`` or ``'cuda:N'``."""
    return f"cuda:{x.device.id}" if is_cupy_array(x) else "cpu"


def xp_for(device: str):
    """Array module for a (normalised) device string."""
    return np if device == "cpu" else cupy_module()


def as_numpy(x) -> np.ndarray:
    """Copy a CuPy array to the host; pass NumPy arrays (and scalars) through."""
    return x.get() if is_cupy_array(x) else np.asarray(x)


def as_cupy(x, device: str = "cuda:0"):
    """Put ``x`` on the GPU named by ``device``."""
    cp = cupy_module()
    index = int(parse_device(device).split(":")[1])
    with cp.cuda.Device(index):
        return cp.asarray(x)


def to_device(x, device: str):
    """Move an array to ``device`` (a no-op if it is already there)."""
    device = parse_device(device)
    if array_device(x) == device:
        return x
    if device == "cpu":
        return as_numpy(x)
    return as_cupy(x, device)


def synchronize(device: str | None = None) -> None:
    """Wait for queued GPU work (a no-op on the CPU)."""
    if device is not None and parse_device(device) == "cpu":
        return
    if _cupy is not None:
        _cupy.cuda.get_current_stream().synchronize()


def _cupy_for_kernel(name: str):
    if not name:
        raise ValueError("kernels must be named")
    return cupy_module()


@functools.lru_cache(maxsize=None)
def elementwise_kernel(name: str, in_params: str, out_params: str, operation: str, preamble: str = ""):
    """A memoised, named ``cupy.ElementwiseKernel`` (compiled once per signature)."""
    return _cupy_for_kernel(name).ElementwiseKernel(in_params, out_params, operation, name, preamble=preamble)


@functools.lru_cache(maxsize=None)
def reduction_kernel(name: str, in_params: str, out_params: str, map_expr: str, reduce_expr: str,
                     post_map_expr: str, identity: str):
    """A memoised, named ``cupy.ReductionKernel``."""
    return _cupy_for_kernel(name).ReductionKernel(in_params, out_params, map_expr, reduce_expr, post_map_expr,
                                                  identity, name)


@functools.lru_cache(maxsize=None)
def raw_kernel(name: str, source: str, options: tuple = ()):
    """A memoised ``cupy.RawKernel`` looked up by its function ``name`` in ``source``."""
    return _cupy_for_kernel(name).RawKernel(source, name, options=options)


# --- random numbers -------------------------------------------------------------------

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed minires' global generator (initialisation, dropout-free sampling) and CuPy's."""
    global _generator
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))
    if _cupy is not None:
        _cupy.random.seed(int(seed) % (2**32))


def generator() -> np.random.Generator:
    """The global NumPy generator used for weight initialisation."""
    return _generator


def get_rng_state() -> dict:
    """The global generator's state (a JSON-able dict)."""
    return _generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state returned by :func:`get_rng_state`."""
    _generator.bit_generator.state = state
