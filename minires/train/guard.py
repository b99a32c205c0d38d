"""The non-finite guard: nothing NaN or infinite is ever saved as a run's state.

Before a checkpoint or the final weights are written, every floating-point tensor of the
state is checked: the parameters, the buffers (BatchNorm running statistics, which can
overflow while the loss still looks finite) and the optimizer state (momentum buffers).
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module
from .errors import NonFiniteLossError


def state_tensors(model, optimizer=None):
    """Yield ``(kind, name, array)`` for the model's parameters and buffers and the optimizer's state.

    ``kind`` is ``'parameter'``, ``'buffer'`` or ``'optimizer state'``; optimizer entries are
    named after their parameter (``layer1.0.conv1.weight.momentum_buffer``).
    """
    param_names = {id(p): name for name, p in model.named_parameters()}
    for name, value in model.state_dict(keep_vars=True).items():
        kind = "parameter" if id(value) in param_names else "buffer"
        yield kind, name, value.data if isinstance(value, Tensor) else value
    for param, entries in getattr(optimizer, "state", {}).items():  # (no optimizer: None has no state)
        for key, value in entries.items():
            if value is not None and hasattr(value, "dtype"):
                yield "optimizer state", f"{param_names.get(id(param), '?')}.{key}", value


def first_nonfinite(model, optimizer=None) -> tuple[str, str, str] | None:
    """The first floating-point tensor holding NaN or inf, as ``(kind, name, 'NaN'|'inf')``, or None."""
    for kind, name, array in state_tensors(model, optimizer):
        if np.dtype(array.dtype).kind not in "fc":
            continue
        xp = get_array_module(array)
        if not bool(xp.isfinite(array).all()):
            return kind, name, "NaN" if bool(xp.isnan(array).any()) else "inf"
    return None


def check_checkpoint_finite(arrays: dict, path) -> None:
    """Refuse to resume a checkpoint (``{name: host array}``) holding NaN or inf anywhere.

    Raises:
        NonFiniteLossError: names the first such array (and how many more) and what to do.
    """
    bad = [name for name, a in arrays.items() if np.asarray(a).dtype.kind in "fc" and not np.isfinite(a).all()]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise NonFiniteLossError(
            f"{path} holds NaN/infinite values ({bad[0]}{more}; an older minires saved such states) and cannot be "
            "resumed: start again with --overwrite and a smaller --lr or a longer --warmup-frac")


def position(epoch: int, step: int) -> str:
    """A run's position (``epoch`` finished epochs, ``step`` steps into the next) in words."""
    return f"the end of epoch {epoch}" if step == 0 and epoch > 0 else f"epoch {epoch + 1}, step {step}"


def nonfinite_error(what: str, checkpoint, last_good) -> NonFiniteLossError:
    """The error for a NaN/inf found in ``what``, saying whether a good checkpoint exists.

    Args:
        what: which tensor or loss, at which epoch and step.
        checkpoint: the run's checkpoint path.
        last_good: ``(epoch, step)`` of the last checkpoint known to be finite, or None.
    """
    if last_good is not None:
        kept = (f"The last good checkpoint is kept in {checkpoint} ({position(*last_good)}, every tensor finite); "
                "resuming it with the same settings would repeat the same steps, so ")
    else:
        kept = "No checkpoint was saved before this (nothing to resume), so "
    return NonFiniteLossError(f"{what}; stopping without saving this state. {kept}start again (--overwrite or "
                              "another --out) with a smaller --lr or a longer --warmup-frac, or check the data")
