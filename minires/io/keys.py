"""Finding the state dict inside a checkpoint, and the usual key surgery on third-party weights.

Checkpoints written by training scripts nest the weights (``{'epoch': 90, 'state_dict':
{...}}``), ``DataParallel`` prefixes every name with ``module.``, and repositories name
layers their own way (akamaster's CIFAR ResNets call the classifier ``linear``, minires
and torchvision ``fc``). :func:`rename_keys` does that surgery in one call.
"""

from __future__ import annotations

from typing import Callable, Mapping

from .errors import CheckpointError, short_repr

#: keys under which training scripts commonly nest the model's state dict
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")


def is_state_dict(obj, leaf: type | tuple) -> bool:
    """Whether ``obj`` is a flat ``{str: leaf}`` dict."""
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, leaf) for k, v in obj.items())


def extract_state_dict(obj, source: str, key: str | None, leaf: type | tuple) -> tuple[dict, str | None]:
    """The ``{name: tensor}`` dict inside a loaded checkpoint, and the key it was nested under.

    Args:
        obj: the checkpoint's top-level object.
        source: the file, for messages.
        key: the top-level entry to take (``None``: ``obj`` itself if it is flat, else the
            one entry of :data:`NESTED_STATE_KEYS` that is).
        leaf: the type of tensors in ``obj`` (arrays, or lazy stand-ins).

    Raises:
        KeyError: ``key`` is not a top-level entry.
        CheckpointError: no (or no unique) state dict is found.
    """
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            found = _top_keys(obj) if isinstance(obj, dict) else type(obj).__name__
            raise KeyError(f"{source!r} has no entry {key!r} at its top level (found: {found})")
        obj = obj[key]
    if is_state_dict(obj, leaf):
        return dict(obj), key
    if isinstance(obj, dict) and key is None:
        nested = [k for k in NESTED_STATE_KEYS if k in obj and is_state_dict(obj[k], leaf)]
        if len(nested) == 1:
            return dict(obj[nested[0]]), nested[0]
        bad = [short_repr(k) for k, v in obj.items() if not isinstance(v, leaf)][:5]
        raise CheckpointError(f"{source!r} is not a flat {{name: tensor}} state dict (top-level keys "
                              f"{_top_keys(obj)}; non-tensor entries [{', '.join(bad)}]); pass key=... to pick "
                              "the nested state dict")
    raise CheckpointError(f"{source!r} holds a {type(obj).__name__}, expected a {{name: tensor}} state dict")


def _top_keys(obj: dict) -> str:
    keys = sorted((k for k in obj if isinstance(k, str)), key=str)[:20]
    return "[" + ", ".join(short_repr(k) for k in keys) + (", ...]" if len(obj) > len(keys) else "]")


def _prefix_renamer(mapping: Mapping[str, str]) -> Callable[[str], str]:
    olds = sorted(mapping, key=len, reverse=True)  # the longest matching prefix wins

    def rename(name: str) -> str:
        for old in olds:
            stem = old.rstrip(".")
            if name == stem or name.startswith(stem + "."):
                new, rest = mapping[old].rstrip("."), name[len(stem):]
                return new + rest if new else rest.lstrip(".")
        return name
    return rename


def rename_keys(state: Mapping, rename: Mapping[str, str] | Callable | None = None,
                strip_prefix: str | None = None) -> dict:
    """A copy of ``state`` with its keys changed, for loading weights that other code wrote.

    Args:
        state: ``{name: array}``.
        rename: ``{old: new}`` replacing leading dotted components (``{"linear": "fc"}``
            turns ``linear.weight`` into ``fc.weight`` but leaves ``linear2.weight``; a
            whole key works too; the longest match wins), or a function ``name -> new
            name`` (returning ``None`` drops the entry).
        strip_prefix: removed from the front of every key that starts with it, before
            renaming (``'module.'`` of ``DataParallel``).

    Returns:
        A new dict, same values, same order.

    Raises:
        ValueError: two entries would end up with the same name.

    Example:
        >>> import numpy as np
        >>> rename_keys({"module.linear.weight": np.ones(2)}, {"linear": "fc"}, strip_prefix="module.")
        {'fc.weight': array([1., 1.])}
    """
    renamer = _prefix_renamer(rename) if isinstance(rename, Mapping) else rename
    out = {}
    for name, value in state.items():
        new = name[len(strip_prefix):] if strip_prefix and name.startswith(strip_prefix) else name
        new = renamer(new) if renamer is not None else new
        if new is None:
            continue
        if new in out:
            raise ValueError(f"rename_keys: two entries become {new!r} (the second from {name!r})")
        out[new] = value
    return out


def guess_renames(state_keys, model_keys) -> dict[str, str]:
    """Leading components to rename so unmatched keys fit a model, e.g. ``{'linear': 'fc'}``.

    Pairs a component found only in the file with one found only in the model when the
    rest of their keys agree. Returns ``{}`` when there is no such unambiguous pair.
    """
    state_keys, model_keys = set(state_keys), set(model_keys)
    extra = _by_head(state_keys - model_keys)
    wanted = _by_head(model_keys - state_keys)
    guesses = {old: new for old, tails in extra.items() for new, need in wanted.items() if tails == need}
    return guesses if len(set(guesses.values())) == len(guesses) else {}


def _by_head(keys) -> dict[str, frozenset]:
    groups: dict[str, set] = {}
    for key in keys:
        head, _, tail = key.partition(".")
        groups.setdefault(head, set()).add(tail)
    return {head: frozenset(tails) for head, tails in groups.items()}
