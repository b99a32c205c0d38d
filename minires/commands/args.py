"""What the subcommands share: argument types with clear messages, the device check, the
user-error class and the exit statuses."""

from __future__ import annotations

import argparse
import math

from ..backend import CUPY_INSTALL_HINT, cuda_available, parse_device

EXIT_ERROR = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130

NORMALIZE_HELP = ("input normalisation: train (the training split's per-channel mean/std), cifar (the published "
                  "CIFAR statistics), imagenet, none, or MEAN,STD / M1,M2,M3,S1,S2,S3 in [0, 1] pixel units")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def int_at_least(low):
    """An argparse type: an integer ``>= low``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return parse


def float_in(low, high=math.inf, low_open=False):
    """An argparse type: a finite number in ``[low, high)`` (``(low, high)`` with ``low_open``)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and (value > low if low_open else value >= low) and value < high):
            interval = f"{'(' if low_open else '['}{low}, {high})"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text}")
        return value
    return parse


def normalize_arg(text):
    """An argparse type: a ``--normalize`` value (see :data:`NORMALIZE_HELP`)."""
    from ..data.normalization import parse_normalize  # noqa: PLC0415

    return _parsed(parse_normalize, text)


def device_arg(text):
    """An argparse type: ``cpu``, ``cuda`` or ``cuda:N``."""
    return _parsed(parse_device, text)


def _parsed(parse, text):
    """``parse(text)``, its ``ValueError`` turned into argparse's message for the flag."""
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_device(device: str) -> None:
    """Raise :class:`CLIError` naming ``--device`` unless CuPy and a GPU are there for a ``cuda`` device."""
    if device != "cpu" and not cuda_available():
        raise CLIError(f"--device {device}: CuPy or a GPU is not available; {CUPY_INSTALL_HINT}")
