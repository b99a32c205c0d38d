"""Every switch of minires and every ``MINIRES_*`` environment variable, in one place.

Read a setting with :func:`get`, change it for the process with :func:`set` or for a block
with :func:`using`: ``with minires.config.using(fusion=False, num_threads=1): model(x)``.

=====================  ========================  ===============================================
setting                environment variable      meaning (default)
=====================  ========================  ===============================================
``device``             ``MINIRES_DEVICE``        default device of new tensors (``'cpu'``)
``fusion``             ``MINIRES_FUSION``        fused BN -> ReLU (-> + shortcut) in blocks (on)
``num_threads``        ``MINIRES_NUM_THREADS``   threads of the CPU kernels (the CPU count)
``malloc_tuning``      ``MINIRES_MALLOC_TUNING`` keep freed memory in the process (on)
``cuda_graph``         ``MINIRES_CUDA_GRAPH``    the trainer replays GPU steps from a CUDA graph (off)
``debug``              ``MINIRES_DEBUG``         the CLI shows tracebacks (off)
``data``               ``MINIRES_DATA``          where datasets are looked for first (none)
``conv_algorithm``                               convolution algorithm (``'auto'``)
``fast_paths``                                   CPU fast paths of batch norm, ReLU, pooling (on)
``conv_row_unfold``                              row unfold in the channels-last convolution (on)
``gpu_target_checks``                            range check of CuPy loss targets (on)
=====================  ========================  ===============================================

Values are validated: booleans are ``1/true/yes/on`` or ``0/false/no/off`` in any case,
counts positive ints; anything else raises a ``ValueError`` naming the variable or
setting. Switches are read from the environment once, on first use; ``device``, ``data``,
``cuda_graph`` and ``debug`` each time they are needed (a script may set them before it
creates a tensor or a trainer) unless set here. Importing this module does nothing else,
and it imports nothing from minires, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Callable, NamedTuple

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_bool(value) -> bool:
    """True/False, or a string from :data:`_TRUE` / :data:`_FALSE` in any case; else ``ValueError``."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in _TRUE + _FALSE:
        raise ValueError(f"expected True/False or one of {'/'.join(_TRUE + _FALSE)}, got {value!r}")
    return word in _TRUE


def normalize_device(device) -> str:
    """``'cpu'``, ``'cuda'``/``'gpu'`` -> ``'cuda:0'``, ``'cuda:N'`` (any case); else ``ValueError``."""
    text = str(device).strip().lower()
    if not re.fullmatch(r"cpu|cuda|gpu|cuda:\d+", text):
        raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    return "cpu" if text == "cpu" else "cuda:0" if text in ("cuda", "gpu") else f"cuda:{int(text[5:])}"


def _positive_int(value) -> int:
    text = value.strip() if isinstance(value, str) else None
    number = int(text) if text and re.fullmatch(r"[+-]?\d+", text) else value
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"expected a positive int, got {value!r}")
    return number


def _name(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty name, got {value!r}")
    return value.strip()


def _path(value) -> str | None:
    if not isinstance(value, (str, os.PathLike, type(None))):
        raise ValueError(f"expected a path, got {value!r}")
    return os.fspath(value) if value is not None and str(value).strip() else None


class Setting(NamedTuple):
    """One switch: its default, its check (also applied to environment strings) and its variable."""

    name: str
    default: Callable[[], Any]
    check: Callable[[Any], Any]
    env: str | None = None
    live: bool = False          # read from the environment at every use (unless set here)


SETTINGS = {s.name: s for s in (
    Setting("device", lambda: "cpu", lambda v: normalize_device(_name(v)), "MINIRES_DEVICE", live=True),
    Setting("fusion", lambda: True, parse_bool, "MINIRES_FUSION"),
    Setting("num_threads", lambda: max(1, os.cpu_count() or 1), _positive_int, "MINIRES_NUM_THREADS"),
    Setting("malloc_tuning", lambda: True, parse_bool, "MINIRES_MALLOC_TUNING"),
    Setting("cuda_graph", lambda: False, parse_bool, "MINIRES_CUDA_GRAPH", live=True),
    Setting("debug", lambda: False, parse_bool, "MINIRES_DEBUG", live=True),
    Setting("data", lambda: None, _path, "MINIRES_DATA", live=True),
    Setting("conv_algorithm", lambda: "auto", _name),
    Setting("fast_paths", lambda: True, parse_bool),
    Setting("conv_row_unfold", lambda: True, parse_bool),
    Setting("gpu_target_checks", lambda: True, parse_bool),
)}

_values: dict = {}      # what set()/using() chose, and the switches already read from the environment
_MISSING = object()


def _setting(name: str) -> Setting:
    if name not in SETTINGS:
        raise KeyError(f"minires.config: unknown setting {name!r}; known: {', '.join(SETTINGS)}")
    return SETTINGS[name]


def _from_environment(setting: Setting, environ) -> Any:
    text = environ.get(setting.env) if setting.env else None
    if text is None or not text.strip():
        return setting.default()
    try:
        return setting.check(text)
    except ValueError as exc:
        raise ValueError(f"{setting.env}={text!r} is not valid: {exc}") from None


def get(name: str) -> Any:
    """The current value of setting ``name`` (table above).

    Raises:
        KeyError: an unknown name.
        ValueError: its environment variable holds an invalid value (the message names it).
    """
    value = _values.get(name, _MISSING)
    if value is _MISSING:
        setting = _setting(name)
        value = _from_environment(setting, os.environ)
        if not setting.live:
            _values[name] = value
    return value


def set(**values) -> None:  # noqa: A001 - minires.config.set(...) reads as what it does
    """Set settings for the whole process, e.g. ``set(fusion=False, num_threads=2)``.

    Raises:
        KeyError: an unknown name.
        ValueError: an invalid value (the message names the setting).
    """
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = _setting(name).check(value)
        except ValueError as exc:
            raise ValueError(f"minires.config: {name}: {exc}") from None
    _values.update(checked)


@contextlib.contextmanager
def using(**values):
    """Context manager: the given settings inside the block, the previous ones restored after it."""
    previous = {name: _values.get(name, _MISSING) for name in values}
    set(**values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is _MISSING:
                _values.pop(name, None)
            else:
                _values[name] = value


def read_environment(environ=None) -> dict:
    """Every setting as the environment (default ``os.environ``) alone sets it; validated, nothing stored.

    Raises:
        ValueError: a ``MINIRES_*`` variable holds an invalid value.
    """
    environ = os.environ if environ is None else environ
    return {name: _from_environment(setting, environ) for name, setting in SETTINGS.items()}


__all__ = ["get", "set", "using", "read_environment", "parse_bool", "normalize_device", "SETTINGS", "Setting"]
