"""Weight initialisation with ``torch.nn.init``'s gain and fan rules.

Every function fills a tensor in place (outside the graph) and returns it. Random values
are drawn in float64 from minires' seeded global generator
(``minires.backend.generator()``, seeded by ``mr.manual_seed``), cast to the tensor's
dtype and moved to its device. Shapes follow PyTorch: for a weight of shape
``(out, in, *kernel)``, ``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``.

Inside :func:`no_init` the random initialisers draw nothing and leave tensors as they are
(for building a model only to read its structure, as ``minires models`` does).
"""

from __future__ import annotations

import contextlib
import math
import threading

import numpy as np

from .. import backend
from ..autograd import Tensor

_LINEAR_LIKE = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table).

    ``linear``/``conv*``/``sigmoid``: 1; ``tanh``: 5/3; ``relu``: sqrt(2);
    ``leaky_relu``: sqrt(2 / (1 + slope^2)) with slope ``param`` (default 0.01);
    ``selu``: 3/4.

    Raises:
        ValueError: an unknown nonlinearity or a non-numeric slope.
    """
    if nonlinearity in _LINEAR_LIKE:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}: expected one of "
                     f"{', '.join(_LINEAR_LIKE + ('tanh', 'relu', 'leaky_relu', 'selu'))}")


def _check_tensor(tensor, name: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: expected a Tensor or Parameter, got {type(tensor).__name__}")
    if tensor.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {tensor.dtype}")


def calculate_fan_in_and_fan_out(tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shaped ``(out, in, *kernel)``.

    Raises:
        ValueError: the tensor has fewer than 2 dimensions.
    """
    shape = tensor.shape
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         f"dimensions (got shape {tuple(shape)})")
    receptive_field = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[1]) * receptive_field, int(shape[0]) * receptive_field


def _calculate_correct_fan(tensor, mode: str) -> int:
    mode = mode.lower() if isinstance(mode, str) else mode
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _kaiming_std(tensor, a, mode: str, nonlinearity: str) -> float:
    """``gain / sqrt(fan)``; 0.0 for an empty weight (fan 0), which the initialisers leave as it is."""
    fan = _calculate_correct_fan(tensor, mode)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0


_skipping = threading.local()


@contextlib.contextmanager
def no_init():
    """Context manager: the random initialisers (``uniform_``, ``normal_``, ``kaiming_*``, ...) do nothing.

    Arguments are still checked and the constant fills (``ones_``, ``zeros_``,
    ``constant_``) still run; tensors keep what they were allocated with (zeros for the
    layers of :mod:`minires.nn`) and the global generator is not advanced. Building a
    ResNet-152 this way takes a fraction of the time, for uses that need only its
    structure: parameter counts, shapes, a multiply-add count. Applies to the current
    thread; nests.

    Example:
        >>> with nn.init.no_init():
        ...     model = models.create("resnet152")   # all weights zero
    """
    previous = getattr(_skipping, "active", False)
    _skipping.active = True
    try:
        yield
    finally:
        _skipping.active = previous


def _fill_random(tensor, sample):
    """Fill ``tensor`` with ``sample(generator)`` (float64 host values), unless inside :func:`no_init`."""
    if getattr(_skipping, "active", False):
        return tensor
    return _fill(tensor, sample(backend.generator()))


def _fill(tensor, values: np.ndarray):
    """Write float64 host ``values`` into ``tensor`` keeping its dtype and device."""
    values = np.asarray(values, dtype=tensor.dtype)
    if tensor.device != "cpu":
        values = backend.to_device(values, tensor.device)
    tensor.data[...] = values
    return tensor


def uniform_(tensor, a: float = 0.0, b: float = 1.0):
    """Fill with samples of U(a, b)."""
    _check_tensor(tensor, "uniform_")
    if a > b:
        raise ValueError(f"uniform_: expects a <= b, got a={a}, b={b}")
    return _fill_random(tensor, lambda rng: rng.uniform(a, b, size=tensor.shape))


def normal_(tensor, mean: float = 0.0, std: float = 1.0):
    """Fill with samples of N(mean, std^2)."""
    _check_tensor(tensor, "normal_")
    if std < 0:
        raise ValueError(f"normal_: expects std >= 0, got {std}")
    return _fill_random(tensor, lambda rng: rng.normal(mean, std, size=tensor.shape))


def trunc_normal_(tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0):
    """Fill with N(mean, std^2) samples redrawn until they lie in ``[a, b]``."""
    _check_tensor(tensor, "trunc_normal_")
    if not a < b:
        raise ValueError(f"trunc_normal_: expects a < b, got a={a}, b={b}")

    def sample(rng):
        values = rng.normal(mean, std, size=tensor.shape)
        bad = (values < a) | (values > b)
        while bad.any():
            values[bad] = rng.normal(mean, std, size=int(bad.sum()))
            bad = (values < a) | (values > b)
        return values

    return _fill_random(tensor, sample)


def constant_(tensor, val: float):
    """Fill with the value ``val``."""
    _check_tensor(tensor, "constant_")
    tensor.data[...] = val
    return tensor


def zeros_(tensor):
    """Fill with zeros."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill with ones."""
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain: float = 1.0):
    """Glorot uniform: U(-b, b) with ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    _check_tensor(tensor, "xavier_uniform_")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / float(fan_in + fan_out))
    return _fill_random(tensor, lambda rng: rng.uniform(-bound, bound, size=tensor.shape))


def xavier_normal_(tensor, gain: float = 1.0):
    """Glorot normal: N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    _check_tensor(tensor, "xavier_normal_")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return _fill_random(tensor, lambda rng: rng.normal(0.0, std, size=tensor.shape))


def kaiming_uniform_(tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """He uniform: U(-b, b) with ``b = gain * sqrt(3 / fan)``.

    ``gain = calculate_gain(nonlinearity, a)``; with the defaults (``a=0``, leaky ReLU)
    the gain is sqrt(2), the ReLU gain. ``a=sqrt(5)`` gives ``b = 1/sqrt(fan_in)``, the
    default initialisation of ``Conv2d`` and ``Linear`` weights.

    Args:
        tensor: weight of shape ``(out, in, *kernel)``.
        a: negative slope of the leaky ReLU that follows (only for ``leaky_relu``).
        mode: ``'fan_in'`` keeps the forward variance, ``'fan_out'`` the backward one.
        nonlinearity: ``'relu'``, ``'leaky_relu'``, ...
    """
    _check_tensor(tensor, "kaiming_uniform_")
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return _fill_random(tensor, lambda rng: rng.uniform(-bound, bound, size=tensor.shape)) if bound else tensor


def kaiming_normal_(tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """He normal: N(0, std^2) with ``std = gain / sqrt(fan)``.

    The ResNet paper's initialisation is ``kaiming_normal_(w, mode='fan_out',
    nonlinearity='relu')``. Arguments as in :func:`kaiming_uniform_`.
    """
    _check_tensor(tensor, "kaiming_normal_")
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    return _fill_random(tensor, lambda rng: rng.normal(0.0, std, size=tensor.shape)) if std else tensor


def default_layer_init_(weight, bias=None) -> None:
    """PyTorch's default initialisation of ``Conv2d`` and ``Linear`` parameters, in place.

    ``weight`` gets ``kaiming_uniform_(a=sqrt(5))``, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    and ``bias`` (if not ``None``) U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the weight's ``fan_in``.
    """
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound)


# PyTorch's private spelling, used by layers' reset_parameters in the wild
_calculate_fan_in_and_fan_out = calculate_fan_in_and_fan_out
