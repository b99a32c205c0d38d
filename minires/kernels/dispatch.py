"""One way to choose among the implementations of a kernel family.

A family (convolution, batch norm with its fused ReLU and addend, ReLU, max and average
pooling) has a readable ``'reference'`` implementation (NumPy, with its CuPy twin on the
GPU) and may have faster ones for some layouts, shapes or devices. Each implementation
declares when it applies (``supports(*problem) -> bool``) and the family picks at one
place, :meth:`KernelFamily.select`: ``'auto'`` takes the first implementation, latest
registered first, that supports the problem (else the reference); ``'reference'`` the
reference; any other name that implementation where it supports the problem, else the
reference. The process-wide choice comes from :mod:`minires.config` (``conv_algorithm``
for the convolution, ``fast_paths`` for the others: on is ``'auto'``, off ``'reference'``)
and every entry point takes ``algorithm=`` for one call. A backward that works from what
its forward kept (a convolution's workspace, batch norm's saved input) runs the
implementation the forward recorded by name; elementwise families choose again.

Device twins without alternatives (``im2col``, sigmoid, the losses, the SGD update) keep
a three-line dispatcher by array type; :func:`twin` is that dispatcher as a function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import backend, config


def always(*problem) -> bool:
    """``supports`` of an implementation that handles every problem."""
    return True


@dataclass
class KernelImplementation:
    """One implementation of a family: its name, forward and backward kernels, and when it applies."""

    name: str
    forward: Callable
    backward: Callable
    supports: Callable[..., bool] = always


def twin(cpu: Callable, gpu: Callable) -> Callable:
    """A function that runs ``gpu`` when its first argument is a CuPy array and ``cpu`` otherwise."""
    def run(array, *args, **kwargs):
        return (gpu if backend.is_cupy_array(array) else cpu)(array, *args, **kwargs)

    run.__name__ = run.__qualname__ = cpu.__name__.removesuffix("_cpu")
    run.__doc__ = f"{cpu.__name__} on NumPy, {gpu.__name__} on CuPy."
    return run


def fast_paths_choice() -> str:
    """``'auto'`` when ``minires.config`` ``fast_paths`` is on, else ``'reference'``."""
    return "auto" if config.get("fast_paths") else "reference"


class KernelFamily:
    """The implementations of one op family and the rule that picks one (module docstring).

    Args:
        name: the family's name (in error messages).
        reference: its ``'reference'`` implementation (it supports every problem).
        choice: returns the process-wide choice (``'auto'``, ``'reference'`` or a name).
    """

    def __init__(self, name: str, reference, choice: Callable[[], str] = fast_paths_choice):
        self.name, self.choice = name, choice
        self.implementations = {"reference": reference}
        self.auto_order: list[str] = []      # the names 'auto' tries, best first (the reference after all)

    def register(self, implementation, auto_priority: bool = True) -> None:
        """Add (or replace) an implementation; ``auto_priority`` puts it first in ``'auto'``'s order."""
        name = implementation.name
        if name == "auto":
            raise ValueError(f"{self.name}: 'auto' is reserved for automatic selection")
        self.implementations[name] = implementation
        if name in self.auto_order:
            self.auto_order.remove(name)
        if auto_priority and name != "reference":
            self.auto_order.insert(0, name)

    def names(self) -> list[str]:
        """Every accepted choice, ``'auto'`` first."""
        return ["auto"] + list(self.implementations)

    def check(self, name) -> str:
        """``name`` if it is a known choice, else a ``ValueError`` listing the known ones."""
        if name != "auto" and name not in self.implementations:
            raise ValueError(f"{self.name}: unknown algorithm {name!r}; expected one of {self.names()}")
        return name

    def get(self, name: str):
        """The implementation registered as ``name``."""
        return self.implementations[self.check(name)]

    def select(self, *problem, algorithm: str | None = None):
        """The implementation for ``problem`` (what ``supports`` receives) under ``algorithm``
        (``'auto'``, ``'reference'`` or a name; ``None``: the process-wide choice)."""
        name = self.check(self.choice() if algorithm is None else algorithm)
        for candidate in self.auto_order if name == "auto" else (name,):
            if self.implementations[candidate].supports(*problem):
                return self.implementations[candidate]
        return self.implementations["reference"]


__all__ = ["KernelFamily", "KernelImplementation", "twin", "always", "fast_paths_choice"]
