"""Switches that turn graph recording on and off (``no_grad``, ``enable_grad``)."""

from __future__ import annotations

import functools
import threading

_state = threading.local()


def is_grad_enabled() -> bool:
    """True when operations record the graph for backward."""
    return getattr(_state, "enabled", True)


def builds_graph(tensors) -> bool:
    """True when an op on ``tensors`` records a graph: grad mode is on and one of them requires grad.

    Args:
        tensors: the op's inputs (``Tensor`` or ``None``), as a tuple or list.
    """
    # (the grad-mode read is inlined: Function.apply calls this once per op)
    return getattr(_state, "enabled", True) and any(t is not None and t.requires_grad for t in tensors)


def _set(enabled: bool) -> None:
    _state.enabled = bool(enabled)


class _GradMode:
    """Context manager and decorator that sets grad mode and restores it on exit."""

    enabled: bool

    def __enter__(self):
        self._previous = is_grad_enabled()
        _set(self.enabled)
        return self

    def __exit__(self, *exc):
        _set(self._previous)
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return func(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):  # noqa: N801 (PyTorch's spelling)
    """Disable graph recording inside a ``with`` block or a decorated function.

    Example:
        >>> with mr.no_grad():
        ...     logits = model(x)
    """

    enabled = False


class enable_grad(_GradMode):  # noqa: N801
    """Re-enable graph recording inside a ``no_grad`` region."""

    enabled = True


class set_grad_enabled(_GradMode):  # noqa: N801
    """Set grad mode to ``mode`` for a ``with`` block."""

    def __init__(self, mode: bool):
        self.enabled = bool(mode)

    def __call__(self, func):  # pragma: no cover - decorator form not offered
        raise TypeError("set_grad_enabled is a context manager, not a decorator")
