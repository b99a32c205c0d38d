"""2-D convolution kernels (no autograd): forward, input gradient, weight and bias gradients.

Notation: input ``x (N, C, H, W)``, weight ``w (C_out, C/G, KH, KW)`` (PyTorch's layout),
``G`` groups, stride ``(SH, SW)``, zero padding ``(PH, PW)`` on each side, output
``(N, C_out, OH, OW)``, and per group ``Cg = C/G`` input channels, ``Og = C_out/G``
output channels, ``K = Cg*KH*KW`` and ``L = OH*OW``.

The reference algorithm is im2col + GEMM::

    cols = im2col(x)                       # (N, G, K, L)
    out  = w.reshape(G, Og, K) @ cols      # (N, G, Og, L)  (+ bias)
    dx   = col2im(w^T @ dout)              # the adjoint of the two steps above
    dw   = sum_n dout[n] @ cols[n]^T       # (G, Og, K)
    db   = dout.sum(over N, OH, OW)

Algorithms are chosen at one point, the :class:`~minires.kernels.dispatch.KernelFamily`
:data:`CONV2D`. :func:`set_conv_algorithm` sets the process-wide choice (the setting
``conv_algorithm`` of :mod:`minires.config`; ``'auto'``, the default, takes the first
registered algorithm that supports the problem, falling back to ``'reference'``); every
entry point also takes ``algorithm=`` to override it, so the reference stays callable for
tests. Faster paths (NHWC layouts, shift-and-accumulate, reuse of the forward columns in
the weight gradient) plug in with :func:`register_conv_algorithm`; the ``workspace`` dict
that the forward receives is handed to both backward functions, so an algorithm can keep
what it computed there.
"""

from __future__ import annotations

import contextlib
import numbers
from dataclasses import dataclass
from typing import Callable

from .. import backend, config
from .dispatch import KernelFamily, always
from .im2col import col2im, conv_output_size, im2col
from .memory import tune_malloc_once


# --- geometry and validation -------------------------------------------------------------

def int_pair(value, name: str, minimum: int | None = None, single_ok: bool = False) -> tuple[int, int]:
    """``value``, an int or a pair of ints, as an ``(h, w)`` pair; clear errors otherwise.

    The one parser of size-like arguments (kernel size, stride, padding, output size) for
    convolution, pooling and their layers.

    Args:
        value: an int, or a tuple or list of two ints (or of one, with ``single_ok``, as
            PyTorch's pooling accepts).
        name: the argument as messages call it, after its op (``'conv2d: stride'``).
        minimum: the smallest value allowed, or ``None`` for no bound.
        single_ok: accept a one-element sequence.

    Raises:
        TypeError: an entry that is not an int (a ``bool`` is not).
        ValueError: a sequence of another length, or an entry below ``minimum``.
    """
    if isinstance(value, (tuple, list)):
        if len(value) not in ((1, 2) if single_ok else (2,)):
            raise ValueError(f"{name} must be an int or a pair of ints, got {tuple(value)!r}")
        pair = (value[0], value[-1])
    else:
        pair = (value, value)
    if any(isinstance(item, bool) or not isinstance(item, numbers.Integral) for item in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    pair = (int(pair[0]), int(pair[1]))
    if minimum is not None and min(pair) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}; expected {kind} ints")
    return pair


@dataclass(frozen=True)
class ConvGeometry:
    """Every size of one convolution problem (see the module docstring for the names)."""

    N: int
    C: int
    H: int
    W: int
    C_out: int
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int
    OH: int
    OW: int
    groups: int

    @property
    def x_shape(self) -> tuple:
        """The input shape ``(N, C, H, W)``."""
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self) -> tuple:
        """The weight shape ``(C_out, C/groups, KH, KW)``."""
        return (self.C_out, self.C // self.groups, self.KH, self.KW)

    @property
    def out_shape(self) -> tuple:
        """The output shape ``(N, C_out, OH, OW)``."""
        return (self.N, self.C_out, self.OH, self.OW)


def conv_geometry(x_shape, w_shape, stride=1, padding=0, groups=1, bias_shape=None) -> ConvGeometry:
    """Validate a convolution's shapes and options and compute its output size.

    Args:
        x_shape: ``(N, C, H, W)``.
        w_shape: ``(C_out, C/groups, KH, KW)``.
        stride: int or ``(SH, SW)``, each >= 1.
        padding: int or ``(PH, PW)``, each >= 0.
        groups: int >= 1 dividing both ``C`` and ``C_out``.
        bias_shape: ``(C_out,)`` or ``None`` for no bias.

    Returns:
        The :class:`ConvGeometry`.

    Raises:
        ValueError: a rank, channel, group, bias or size mismatch, a non-positive stride, a
            negative padding, or a kernel larger than the padded input; the message
            states what was expected and what was given.
        TypeError: stride, padding or groups that are not ints.
    """
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if len(x_shape) != 4:
        raise ValueError(f"conv2d: expected input of rank 4 (N, C, H, W), got rank {len(x_shape)} "
                         f"with shape {x_shape}")
    if len(w_shape) != 4:
        raise ValueError(f"conv2d: expected weight of rank 4 (C_out, C_in/groups, KH, KW), got rank "
                         f"{len(w_shape)} with shape {w_shape}")
    SH, SW = int_pair(stride, "conv2d: stride", minimum=1)
    PH, PW = int_pair(padding, "conv2d: padding", minimum=0)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"conv2d: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"conv2d: groups must be positive, got {groups}")
    groups = int(groups)
    N, C, H, W = x_shape
    C_out, Cg, KH, KW = w_shape
    if KH < 1 or KW < 1 or C_out < 1:
        raise ValueError(f"conv2d: weight {w_shape} has an empty dimension; expected C_out, KH, KW >= 1")
    if C % groups:
        raise ValueError(f"conv2d: input channels ({C}) must be divisible by groups ({groups})")
    if C_out % groups:
        raise ValueError(f"conv2d: output channels ({C_out}, weight.shape[0]) must be divisible by "
                         f"groups ({groups})")
    if Cg * groups != C:
        raise ValueError(
            f"conv2d: weight {w_shape} with groups={groups} expects input with "
            f"{Cg * groups} channels (weight.shape[1] * groups), got input {x_shape} with {C} channels"
        )
    if bias_shape is not None and tuple(bias_shape) != (C_out,):
        raise ValueError(f"conv2d: expected bias of shape ({C_out},) (one per output channel), "
                         f"got {tuple(bias_shape)}")
    if H + 2 * PH < KH or W + 2 * PW < KW:
        raise ValueError(
            f"conv2d: kernel size ({KH}, {KW}) is larger than the padded input size "
            f"({H + 2 * PH}, {W + 2 * PW}) (input ({H}, {W}) with padding ({PH}, {PW}))"
        )
    OH = conv_output_size(H, KH, SH, PH)
    OW = conv_output_size(W, KW, SW, PW)
    return ConvGeometry(N, C, H, W, C_out, KH, KW, SH, SW, PH, PW, OH, OW, groups)


# --- the reference algorithm: im2col + GEMM ------------------------------------------------

def _grouped_cols(x, geo: ConvGeometry):
    """``im2col(x)`` viewed as ``(N, G, K, L)``."""
    cols = im2col(x, geo.KH, geo.KW, geo.SH, geo.SW, geo.PH, geo.PW)
    return cols.reshape(geo.N, geo.groups, (geo.C // geo.groups) * geo.KH * geo.KW, geo.OH * geo.OW)


def _forward_from_cols(cols, w, b, geo: ConvGeometry):
    """``out = W @ cols + b`` per group, from the ``(N, G, K, L)`` columns of :func:`_grouped_cols`."""
    xp = backend.get_array_module(cols)
    w_mat = w.reshape(geo.groups, geo.C_out // geo.groups, -1)        # (G, Og, K)
    out = xp.matmul(w_mat, cols).reshape(geo.out_shape)           # (N, G, Og, L) -> NCHW
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def reference_forward(x, w, b, geo: ConvGeometry, workspace=None):
    """Reference convolution forward: ``out = W @ im2col(x) + b`` per group."""
    return _forward_from_cols(_grouped_cols(x, geo), w, b, geo)


def reference_backward_input(grad, w, geo: ConvGeometry, workspace=None):
    """Reference input gradient: ``dx = col2im(W^T @ dout)`` per group."""
    xp = backend.get_array_module(grad)
    Og = geo.C_out // geo.groups
    grad_mat = grad.reshape(geo.N, geo.groups, Og, geo.OH * geo.OW)    # (N, G, Og, L)
    # W^T copied to a contiguous array (it is small), so each of the N products is a plain GEMM
    w_t = xp.ascontiguousarray(xp.swapaxes(w.reshape(geo.groups, Og, -1), -1, -2))  # (G, K, Og)
    dcols = xp.matmul(w_t, grad_mat)                            # (N, G, K, L)
    dcols = dcols.reshape(geo.N, geo.C, geo.KH, geo.KW, geo.OH, geo.OW)
    return col2im(dcols, geo.x_shape, geo.SH, geo.SW, geo.PH, geo.PW)


def reference_backward_weight(grad, x, geo: ConvGeometry, workspace=None):
    """Reference weight gradient: ``dW = sum_n dout[n] @ im2col(x)[n]^T`` per group."""
    xp = backend.get_array_module(grad)
    Og = geo.C_out // geo.groups
    cols = _grouped_cols(x, geo)                                  # (N, G, K, L)
    grad_t = xp.ascontiguousarray(xp.swapaxes(grad.reshape(geo.N, geo.groups, Og, geo.OH * geo.OW), -1, -2))
    dw_t = xp.matmul(cols, grad_t).sum(axis=0)                  # (N, G, K, L) @ (N, G, L, Og) -> (G, K, Og)
    return xp.swapaxes(dw_t, -1, -2).reshape(geo.w_shape)


# --- algorithm selection -------------------------------------------------------------------

@dataclass(frozen=True)
class ConvAlgorithm:
    """One way to compute a convolution.

    Attributes:
        name: the name :func:`set_conv_algorithm` and ``algorithm=`` use.
        forward: ``(x, w, b_or_None, geometry, workspace) -> out``.
        backward_input: ``(grad, w, geometry, workspace) -> dx``.
        backward_weight: ``(grad, x, geometry, workspace) -> dw``.
        supports: ``(geometry, device) -> bool``; ``'auto'`` skips an algorithm that
            returns False.
    """

    name: str
    forward: Callable
    backward_input: Callable
    backward_weight: Callable
    supports: Callable = always


#: the convolution's algorithms; the process-wide choice is ``minires.config`` ``conv_algorithm``
CONV2D = KernelFamily("conv2d", ConvAlgorithm("reference", reference_forward, reference_backward_input,
                                              reference_backward_weight), choice=lambda: config.get("conv_algorithm"))


def register_conv_algorithm(algorithm: ConvAlgorithm, auto_priority: bool = True) -> None:
    """Add (or replace) an algorithm.

    Args:
        algorithm: the :class:`ConvAlgorithm`.
        auto_priority: when True, ``'auto'`` tries it before every algorithm registered
            earlier (the reference is always the last resort).
    """
    CONV2D.register(algorithm, auto_priority)


def available_conv_algorithms() -> list[str]:
    """Names accepted by :func:`set_conv_algorithm` (``'auto'`` first)."""
    return CONV2D.names()


def set_conv_algorithm(name: str) -> None:
    """Choose the convolution algorithm for the whole process (``minires.config`` ``conv_algorithm``).

    Args:
        name: ``'auto'`` (default: the first registered algorithm that supports the
            problem, else ``'reference'``), ``'reference'`` (im2col + GEMM), or any name
            added with :func:`register_conv_algorithm`. A named algorithm is used for
            the problems it supports (its ``supports``); the others (say grouped
            convolutions under ``'nhwc'``) run on ``'reference'``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    config.set(conv_algorithm=CONV2D.check(name))


def get_conv_algorithm() -> str:
    """The name set with :func:`set_conv_algorithm`."""
    return config.get("conv_algorithm")


@contextlib.contextmanager
def conv_algorithm(name: str):
    """Context manager: use algorithm ``name`` inside the block, then restore the previous one."""
    with config.using(conv_algorithm=CONV2D.check(name)):
        yield


def select_conv_algorithm(geometry: ConvGeometry, device: str = "cpu", algorithm: str | None = None) -> ConvAlgorithm:
    """Resolve ``algorithm`` (default: the process-wide setting) to a :class:`ConvAlgorithm`."""
    return CONV2D.select(geometry, device, algorithm=algorithm)


# --- public entry points -------------------------------------------------------------------

def conv2d_forward(x, w, b=None, stride=1, padding=0, groups=1, *, algorithm: str | None = None,
                   workspace: dict | None = None):
    """Convolution forward on raw arrays (PyTorch's ``conv2d``, no autograd).

    ``out[n, o, p, q] = b[o] + sum_{c in group(o), i, j} w[o, c, i, j] *
    x_padded[n, c, p*SH + i, q*SW + j]``.

    Args:
        x: input ``(N, C, H, W)`` (NumPy or CuPy).
        w: weight ``(C_out, C/groups, KH, KW)``.
        b: bias ``(C_out,)`` or ``None``.
        stride: int or ``(SH, SW)``.
        padding: int or ``(PH, PW)`` zeros on each side.
        groups: number of channel groups (``C`` for depthwise).
        algorithm: override of :func:`set_conv_algorithm` for this call.
        workspace: a dict the algorithm may fill for the backward functions.

    Returns:
        ``(N, C_out, OH, OW)`` with ``OH = (H + 2*PH - KH) // SH + 1`` (likewise ``OW``).
    """
    tune_malloc_once()       # the allocator tuning of minires/kernels/memory.py, on the first convolution
    geo = conv_geometry(x.shape, w.shape, stride, padding, groups, None if b is None else b.shape)
    algo = select_conv_algorithm(geo, backend.array_device(x), algorithm)
    if workspace is not None:
        workspace["algorithm"] = algo.name
    return algo.forward(x, w, b, geo, workspace)


def conv2d_backward_input(grad, w, x_shape, stride=1, padding=0, groups=1, *, algorithm: str | None = None,
                          workspace: dict | None = None):
    """Gradient of the convolution with respect to its input.

    Args:
        grad: upstream gradient ``(N, C_out, OH, OW)``.
        w: weight ``(C_out, C/groups, KH, KW)``.
        x_shape: ``(N, C, H, W)`` of the input.
        stride, padding, groups: as in the forward.
        algorithm: override (default: the forward's choice recorded in ``workspace``,
            else the process-wide setting).
        workspace: the dict given to :func:`conv2d_forward`.

    Returns:
        ``dx`` of shape ``x_shape``.
    """
    geo = conv_geometry(x_shape, w.shape, stride, padding, groups)
    return _backward_algorithm(geo, grad, algorithm, workspace).backward_input(grad, w, geo, workspace)


def conv2d_backward_weight(grad, x, w_shape, stride=1, padding=0, groups=1, *, algorithm: str | None = None,
                           workspace: dict | None = None):
    """Gradient of the convolution with respect to its weight.

    Args:
        grad: upstream gradient ``(N, C_out, OH, OW)``.
        x: the forward input ``(N, C, H, W)``.
        w_shape: ``(C_out, C/groups, KH, KW)``.
        stride, padding, groups: as in the forward.
        algorithm: override (default: the forward's choice recorded in ``workspace``,
            else the process-wide setting).
        workspace: the dict given to :func:`conv2d_forward`.

    Returns:
        ``dw`` of shape ``w_shape``.
    """
    geo = conv_geometry(x.shape, w_shape, stride, padding, groups)
    return _backward_algorithm(geo, grad, algorithm, workspace).backward_weight(grad, x, geo, workspace)


def conv2d_backward_bias(grad):
    """Gradient of the convolution with respect to its bias: ``grad.sum(over N, OH, OW)``, shape ``(C_out,)``."""
    return grad.sum(axis=(0, 2, 3))


def _backward_algorithm(geo, grad, algorithm, workspace) -> ConvAlgorithm:
    if algorithm is None and workspace is not None and "algorithm" in workspace:
        algorithm = workspace["algorithm"]
    return select_conv_algorithm(geo, backend.array_device(grad), algorithm)


__all__ = [
    "ConvGeometry", "ConvAlgorithm", "conv_geometry", "conv2d_forward", "conv2d_backward_input",
    "conv2d_backward_weight", "conv2d_backward_bias", "set_conv_algorithm", "get_conv_algorithm",
    "conv_algorithm", "register_conv_algorithm", "CONV2D", "available_conv_algorithms", "select_conv_algorithm",
    "reference_forward", "reference_backward_input", "reference_backward_weight",
]
