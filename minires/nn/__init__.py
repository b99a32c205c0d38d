"""Stateful layers on top of :mod:`minires.functional`, with PyTorch's semantics.

``Module`` (parameters, buffers, children, ``state_dict``, hooks, ``train``/``eval``,
``to``), ``Parameter``, the layers, and :mod:`minires.nn.init`.

Example:
    >>> import minires.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
    ...                       nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
"""

from . import functional, init
from .activation import ReLU, Sigmoid
from .batchnorm import BatchNorm1d, BatchNorm2d
from .container import ModuleDict, ModuleList, Sequential
from .conv import Conv2d
from .fusion import fusion_enabled, set_fusion
from .hooks import RemovableHandle
from .linear import Flatten, Identity, Linear
from .module import IncompatibleKeys, Module, StateDictError
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "Module", "Parameter", "Conv2d", "BatchNorm2d", "BatchNorm1d", "ReLU", "Sigmoid", "MaxPool2d",
    "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "Sequential", "ModuleList", "ModuleDict", "Identity",
    "Flatten", "init", "functional", "RemovableHandle", "StateDictError", "IncompatibleKeys",
    "set_fusion", "fusion_enabled",
]
