"""Loading saved weights into a freshly built model: all of them, or a clear error.

Used wherever a model is rebuilt from a file (``minires eval``, ``minires gradflow
--checkpoint``): a file made by a different architecture (resnet32 weights for a
resnet20, say) is refused with the first key that does not fit and both shapes, never
filtered down to the keys that happen to match.
"""

from __future__ import annotations

import os

from .errors import TrainingError
from .run_dir import read_config_json

#: prefixes under which checkpoints nest the model's weights (minires checkpoint.npz uses "model/")
WEIGHT_PREFIXES = ("model/", "model.", "state_dict.", "weights.")


class WeightsMismatchError(TrainingError, ValueError):
    """A weight file does not hold the weights of the model it is loaded into."""


def model_entries(state: dict, own_keys) -> dict:
    """The entries of ``state`` that are the model's weights.

    A plain state dict is returned as it is; a file that nests the weights under one of
    :data:`WEIGHT_PREFIXES` (a minires ``checkpoint.npz``: ``model/conv1.weight``, plus
    optimizer and RNG entries) gives the entries under the prefix that best fits
    ``own_keys``, with the prefix removed.
    """
    own = set(own_keys)
    if own & set(state):
        return dict(state)
    unwrapped = [{k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} for prefix in WEIGHT_PREFIXES]
    return max([dict(state)] + unwrapped, key=lambda entries: len(own & set(entries)))  # (ties: the first)


def first_mismatch(own: dict, state: dict) -> str | None:
    """Describe the first difference between a model's ``state_dict()`` and ``state``, or None.

    Walks the model's keys in order (a missing key or a different shape), then the file's
    extra keys. A missing ``num_batches_tracked`` counter is not a difference: it carries
    no learned value.
    """
    for key, value in own.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            return f"{key} (shape {tuple(value.shape)}) is missing from the file"
        if tuple(state[key].shape) != tuple(value.shape):
            return f"{key} has shape {tuple(state[key].shape)} in the file but {tuple(value.shape)} in the model"
    for key, value in state.items():
        if key not in own:
            return f"the file has {key} (shape {tuple(getattr(value, 'shape', ()))}), which the model lacks"
    return None


def load_weights_strict(model, state: dict, source, model_name: str) -> None:
    """Copy ``state`` into ``model``, refusing anything but an exact fit.

    Args:
        model: a freshly built ``minires.nn.Module``.
        state: ``{name: array}`` read from ``source`` (prefixed checkpoints are unwrapped
            with :func:`model_entries`).
        source: the file, for messages.
        model_name: the architecture's name, for messages.

    Raises:
        WeightsMismatchError: the keys or shapes differ; names the first mismatching key
            and both shapes, and the model named in ``config.json`` beside the file.
    """
    own = model.state_dict()
    state = model_entries(state, own)
    problem = first_mismatch(own, state)
    if problem is not None:
        missing = sum(k not in state for k in own)
        extra = sum(k not in own for k in state)
        raise WeightsMismatchError(
            f"cannot load {source} into {model_name}: the file holds another architecture's weights: {problem} "
            f"({missing} of the model's keys missing, {extra} extra keys in the file).{_hint(source, model_name)}")
    model.load_state_dict(state, strict=True)  # a missing num_batches_tracked is accepted, as in PyTorch


def _hint(source, model_name: str) -> str:
    config = os.path.join(os.path.dirname(os.path.abspath(os.fspath(source))), "config.json")
    try:
        trained = read_config_json(config).get("model")
    except TrainingError:
        trained = None
    if isinstance(trained, str) and trained != model_name:
        return f" {config} says they are {trained} weights: pass --model {trained}."
    return " Pass the --model the weights were trained with."
