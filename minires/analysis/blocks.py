"""Finding residual blocks in a model and splitting each into branch, shortcut and activation.

A block computes ``y = sigma(F(x) + S(x))``: ``F`` the residual branch, ``S`` the
shortcut (identity, ``lambda * identity``, option-A subsample-and-pad, or a projection),
``sigma`` the post-add activation (ReLU in the original block, none in a pre-activation
block). A plain block has no shortcut: ``y = sigma(F(x))``.

The blocks of :mod:`minires.models` expose the parts as methods; other blocks can be
described with :func:`register_block_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..ops.activation import relu

BRANCH_METHODS = ("residual_branch", "forward_branch", "branch")
SHORTCUT_METHODS = ("shortcut_path", "forward_shortcut", "skip_path", "shortcut_branch", "shortcut")
ACTIVATION_ATTRIBUTES = ("post_activation", "post_add_activation", "activation_after_add", "post_act")


@dataclass
class BlockParts:
    """The pieces of one block, as callables on tensors.

    Attributes:
        kind: ``'original'`` (ReLU after the add), ``'preact'`` (nothing after the add),
            or ``'plain'`` (no shortcut).
        branch: ``x -> F(x)``.
        shortcut: ``x -> S(x)``, or ``None`` for a plain block.
        activation: ``pre -> y`` applied after the add, or ``None``.
        shortcut_kind: a short description (``'identity'``, ``'A'``, ``'B'``, ``'scaled'``, ...).
    """

    kind: str
    branch: Callable
    shortcut: Optional[Callable]
    activation: Optional[Callable]
    shortcut_kind: str = "identity"

    def forward(self, x):
        """``sigma(F(x) + S(x))`` computed from the parts (used to cross-check a block)."""
        pre = self.branch(x) if self.shortcut is None else self.branch(x) + self.shortcut(x)
        return pre if self.activation is None else self.activation(pre)


_ADAPTERS: list = []


def register_block_adapter(adapter: Callable) -> None:
    """Teach the analysis tools a new block type.

    Args:
        adapter: ``adapter(module) -> BlockParts | None``; tried before the built-in
            detection, it returns ``None`` for modules it does not handle.
    """
    if not callable(adapter):
        raise TypeError(f"register_block_adapter: expected a callable, got {type(adapter).__name__}")
    _ADAPTERS.insert(0, adapter)


def _method(module, names):
    for name in names:
        value = getattr(type(module), name, None)
        if callable(value):
            return getattr(module, name)
    return None


def _activation(module):
    for name in ACTIVATION_ATTRIBUTES:
        if hasattr(module, name):
            value = getattr(module, name)
            word = value.lower() if isinstance(value, str) else None
            if value is True or word == "relu":
                return relu, True
            if value is None or value is False or word in ("none", "identity", "") or \
                    type(value).__name__ == "Identity":
                return None, True
            if callable(value):
                return value, True
    return None, False


def _shortcut_kind(module) -> str:
    scale = getattr(module, "shortcut_scale", 1.0)
    suffix = "" if not isinstance(scale, (int, float)) or scale == 1.0 else f" x{scale:g}"
    if hasattr(module, "downsample") and hasattr(module, "shortcut_option"):
        if module.downsample is None:
            return "identity" + suffix
        return str(module.shortcut_option) + suffix
    for name in ("shortcut_type", "shortcut_option", "option"):
        value = getattr(module, name, None)
        if isinstance(value, str):
            return value if scale in (None, 1.0) else f"{value}, scale {scale:g}"
    return f"scaled {scale:g}" if suffix else "identity"


def block_parts(module) -> Optional[BlockParts]:
    """The :class:`BlockParts` of ``module``, or ``None`` if it is not a block.

    A module is a block when it has a residual-branch method (one of
    ``residual_branch``, ``forward_branch``, ``branch``). Its shortcut is the first
    callable of ``shortcut_path``, ``forward_shortcut``, ``skip_path``,
    ``shortcut_branch``, ``shortcut`` defined on the class (absent, or a block whose
    ``skip`` is False or ``is_plain`` true: a plain block); the post-add activation is the
    value of ``post_activation`` (or a synonym): a callable, ``True``/``'relu'``, or
    ``None``/``False``/an ``Identity`` module. Without that attribute, a block with
    ``preactivation``/``preact`` true gets none and any other gets ReLU. This is the
    anatomy of every block in :mod:`minires.models.blocks`.
    """
    for adapter in _ADAPTERS:
        parts = adapter(module)
        if parts is not None:
            return parts
    branch = _method(module, BRANCH_METHODS)
    if branch is None:
        return None
    plain = bool(getattr(module, "is_plain", False) or getattr(module, "plain", False) is True
                 or getattr(module, "skip", True) is False)
    shortcut = None if plain else _method(module, SHORTCUT_METHODS)
    activation, found = _activation(module)
    preact = bool(getattr(module, "preact", False) or getattr(module, "pre_activation", False)
                  or getattr(module, "preactivation", False) is True)
    if not found:
        activation = None if preact else relu
    if shortcut is None:
        kind = "plain"
    else:
        kind = "preact" if (preact or activation is None) else "original"
    return BlockParts(kind=kind, branch=branch, shortcut=shortcut, activation=activation,
                      shortcut_kind="none" if shortcut is None else _shortcut_kind(module))


def named_modules(model):
    """``(name, module)`` pairs of ``model`` and its submodules, depth first, in definition order."""
    if hasattr(model, "named_modules"):
        return list(model.named_modules())
    out, stack = [], [("", model)]
    seen = set()
    while stack:
        name, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        out.append((name, module))
        children = [(k, v) for k, v in vars(module).items() if hasattr(v, "forward") and callable(v)]
        for key, child in reversed(children):
            stack.append((f"{name}.{key}" if name else key, child))
    return out


def find_blocks(model) -> list:
    """``(name, module, parts)`` of every block in ``model`` (definition order).

    Blocks nested inside blocks are not searched (a block's own submodules are its parts).
    """
    blocks = []
    for name, module in named_modules(model):
        if any(name.startswith(block + ".") for block, _, _ in blocks):
            continue
        parts = block_parts(module)
        if parts is not None:
            blocks.append((name, module, parts))
    return blocks
