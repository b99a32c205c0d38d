"""``load_state_dict``: copy a state dict into a module in place, with PyTorch's key and shape rules."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import backend
from ..autograd import Tensor
from ..autograd.grad_mode import no_grad


class StateDictError(RuntimeError, ValueError):
    """``load_state_dict`` found shape mismatches, missing or unexpected keys.

    A subclass of both ``RuntimeError`` (what PyTorch raises) and ``ValueError``.
    """


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(strict=False)`` could not match."""

    missing_keys: list
    unexpected_keys: list


def _fills_in_missing(module, key: str) -> bool:
    """Whether a missing ``key`` is one PyTorch's BatchNorm fills in itself (``num_batches_tracked``)."""
    prefix, _, leaf = key.rpartition(".")
    if leaf != "num_batches_tracked":
        return False
    owner = module.get_submodule(prefix)
    return bool(getattr(owner, "track_running_stats", False)) and hasattr(owner, "running_mean")


def _numeric_array(key: str, value):
    """A state-dict value (array, Tensor or number) as a NumPy or CuPy array of numbers."""
    if isinstance(value, Tensor):
        value = value.data
    if not (isinstance(value, np.ndarray) or backend.is_cupy_array(value)):
        value = np.asarray(value)
    if value.dtype == object or value.dtype.kind not in "biuf":
        raise TypeError(f"state_dict entry {key!r} has non-numeric dtype {value.dtype}")
    return value


def load_state_dict(module, state_dict, strict: bool = True) -> IncompatibleKeys:
    """``module.load_state_dict(state_dict, strict)`` (see :meth:`minires.nn.Module.load_state_dict`)."""
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError(f"expected a mapping from names to arrays for state_dict, got {type(state_dict).__name__}")
    own = module.state_dict(keep_vars=True)  # name -> the Tensor that holds the entry
    errors = []
    missing = [k for k in own if k not in state_dict and not _fills_in_missing(module, k)]
    unexpected = [k for k in state_dict.keys() if k not in own]
    converted = {}
    for key, target in own.items():
        if key not in state_dict:
            continue
        value = _numeric_array(key, state_dict[key])
        if tuple(value.shape) != tuple(target.shape):
            errors.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)} "
                          f"from checkpoint, the shape in current model is {tuple(target.shape)}.")
            continue
        converted[key] = value
    if strict:
        if unexpected:
            errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if missing:
            errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
    if errors:
        raise StateDictError(f"Error(s) in loading state_dict for {type(module).__name__}:\n\t" + "\n\t".join(errors))
    with no_grad():
        for key, value in converted.items():
            target = own[key]
            if backend.array_device(value) != target.device:
                value = backend.to_device(value, target.device)
            target.data[...] = value.astype(target.dtype, copy=False)
    return IncompatibleKeys(missing, unexpected)
