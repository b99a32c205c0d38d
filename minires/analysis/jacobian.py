"""Jacobian probes: JVPs, VJPs and power iteration for a block's spectral norm.

A residual block's Jacobian before the post-add activation is ``dS/dx + dF/dx``
(``I + dF/dx`` for an identity shortcut); a plain block has only ``dF/dx``. The spectral
norm ``||J||_2`` is found by power iteration on ``J^T J``: ``J v`` by forward mode
(:func:`minires.analysis._graph.tangent_of`), ``J^T u`` by a VJP through the same
recorded forward, so both use one linearisation point (the same BN batch statistics,
the same ReLU masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module
from ._graph import OpTape, flat_norm, tangent_of, vjp
from .stream import TracedRun, _parameters, buffers_kept


class Linearization:
    """``fn`` linearised at ``x``: exact ``J v`` and ``J^T u`` without forming ``J``.

    ``fn`` runs once (recorded both for forward and reverse mode); every product then
    reuses that recording, so a BN in train mode is linearised with its batch statistics.

    Args:
        fn: ``Tensor -> Tensor`` built from minires ops.
        x: the point (``Tensor`` or array).
        params: tensors whose ``.grad`` the VJPs must leave untouched (the model's
            parameters).

    Attributes:
        output: ``fn(x)`` (a Tensor).
    """

    def __init__(self, fn, x, params=()):
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        self.x = Tensor(data, requires_grad=True)
        with OpTape() as tape:
            self.output = fn(self.x)
        if not isinstance(self.output, Tensor):
            raise TypeError(f"Linearization: fn must return a Tensor, got {type(self.output).__name__}")
        self.tape = tape
        self.params = list(params)

    @property
    def in_shape(self) -> tuple:
        return self.x.shape

    @property
    def out_shape(self) -> tuple:
        return self.output.shape

    def jvp(self, v):
        """``J v`` (forward mode) for ``v`` shaped like ``x``."""
        v = v.data if isinstance(v, Tensor) else v
        if tuple(v.shape) != self.x.shape:
            raise ValueError(f"jvp: expected a tangent of shape {self.x.shape}, got {tuple(v.shape)}")
        return tangent_of(self.tape, {id(self.x): v.astype(self.x.dtype, copy=False)}, self.output)

    def vjp(self, u):
        """``J^T u`` (reverse mode) for ``u`` shaped like ``fn(x)``."""
        u = u.data if isinstance(u, Tensor) else u
        if tuple(u.shape) != self.output.shape:
            raise ValueError(f"vjp: expected a cotangent of shape {self.output.shape}, got {tuple(u.shape)}")
        if not self.output.requires_grad:
            return get_array_module(self.x.data).zeros_like(self.x.data)
        return vjp(self.output, u.astype(self.output.dtype, copy=False), self.x, guard=self.params)


def jvp(fn, x, v, params=()):
    """Forward-mode Jacobian-vector product ``(dfn/dx)(x) v``.

    Args:
        fn: ``Tensor -> Tensor`` built from minires ops.
        x: the point.
        v: the tangent, shaped like ``x``.
        params: tensors whose ``.grad`` must be left untouched.

    Returns:
        ``(fn(x), J v)`` as ``(Tensor, array)``.
    """
    lin = Linearization(fn, x, params)
    return lin.output, lin.jvp(v)


def jacobian_matrix(lin: Linearization, mode: str = "forward"):
    """The explicit Jacobian ``(out size, in size)`` of a (small) linearisation.

    Args:
        lin: a :class:`Linearization`.
        mode: ``'forward'`` (one JVP per input unit) or ``'reverse'`` (one VJP per output unit).
    """
    if mode not in ("forward", "reverse"):
        raise ValueError(f"jacobian_matrix: mode must be 'forward' or 'reverse', got {mode!r}")
    xp = get_array_module(lin.x.data)
    forward = mode == "forward"
    shape, dtype, product = (lin.in_shape, lin.x.dtype, lin.jvp) if forward else \
        (lin.out_shape, lin.output.dtype, lin.vjp)
    n = int(np.prod(shape))
    vectors = []
    for j in range(n):
        e = xp.zeros(n, dtype=dtype)
        e[j] = 1
        vectors.append(product(e.reshape(shape)).reshape(-1))
    return xp.stack(vectors, axis=1 if forward else 0)


def spectral_norm(lin: Linearization, iters: int = 30, tol: float = 1e-4, seed: int = 0):
    """Power iteration for ``||J||_2``, the largest singular value of the linearisation.

    Iterates ``v <- J^T J v / ||J^T J v||`` from a seeded Gaussian start and returns
    ``||J v||`` at the last iterate (a lower bound that rises to ``||J||_2``).

    Args:
        lin: a :class:`Linearization`.
        iters: at most this many iterations (each one JVP and one VJP).
        tol: stop when the estimate changes by less than ``tol`` relative.
        seed: seed of the starting vector.

    Returns:
        ``(sigma, history)``: the estimate and the per-iteration estimates.
    """
    if iters < 1:
        raise ValueError(f"spectral_norm: iters must be >= 1, got {iters}")
    xp = get_array_module(lin.x.data)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(lin.in_shape).astype(lin.x.dtype)
    v = xp.asarray(v)
    v /= flat_norm(v)
    history = []
    for _ in range(iters):
        u = lin.jvp(v)
        sigma = flat_norm(u)
        history.append(sigma)
        w = lin.vjp(u)
        norm_w = flat_norm(w)
        if norm_w == 0.0:
            break
        v = w / norm_w
        if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * max(history[-1], 1e-30):
            break
    return history[-1], history


@dataclass
class BlockJacobian:
    """Spectral norms of one block's Jacobians at its input in the network.

    Attributes:
        name: the block's module path.
        kind: ``'original'``, ``'preact'`` or ``'plain'``.
        branch: ``||dF/dx||_2``.
        residual: ``||dS/dx + dF/dx||_2`` (``||I + dF/dx||`` for an identity shortcut),
            ``nan`` for a plain block.
        block: the whole block, post-add activation included.
        iterations: power iterations used for ``(branch, residual, block)``.
    """

    name: str
    kind: str
    branch: float
    residual: float
    block: float
    iterations: tuple = ()


def block_jacobian_norms(model, x, iters: int = 20, tol: float = 1e-3, seed: int = 0, blocks=None):
    """``||dF/dx||_2``, ``||dS/dx + dF/dx||_2`` and the whole block's norm, per block.

    The model runs forward once on ``x`` (in its current train/eval mode) to get each
    block's input; each block's functions are then linearised at that input. BN running
    statistics are put back afterwards.

    Args:
        model: a network of blocks (see :mod:`minires.analysis.blocks`).
        x: input batch.
        iters: power iterations per norm (at most).
        tol: relative stopping tolerance.
        seed: seed of the starting vectors.
        blocks: optional list of block names to probe (all by default).

    Returns:
        A list of :class:`BlockJacobian` in forward order.
    """
    params = _parameters(model)
    results = []
    with buffers_kept(model):
        with TracedRun(model, x, None, loss=lambda out: out.sum(), backward=False) as run:
            inputs = [(c.name, c.parts, c.x.data) for c in run.calls]
        for name, parts, xin in inputs:
            if blocks is not None and name not in blocks:
                continue
            sb, hb = spectral_norm(Linearization(parts.branch, xin, params), iters, tol, seed)
            if parts.shortcut is not None:
                sr, hr = spectral_norm(Linearization(lambda t, p=parts: p.branch(t) + p.shortcut(t), xin, params),
                                       iters, tol, seed)
            else:
                sr, hr = float("nan"), []
            if parts.activation is not None:
                sk, hk = spectral_norm(Linearization(parts.forward, xin, params), iters, tol, seed)
            else:
                sk, hk = (sr, hr) if parts.shortcut is not None else (sb, hb)
            results.append(BlockJacobian(name, parts.kind, sb, sr, sk, (len(hb), len(hr), len(hk))))
    return results
