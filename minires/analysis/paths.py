"""Path-length sampling after Veit, Wilber and Belongie (2016), "Residual networks behave
like ensembles of relatively shallow networks".

Unrolled, a stack of ``n`` residual blocks is a sum over ``2^n`` paths; a path of length
``k`` goes through ``k`` residual branches and takes the shortcut at the other ``n - k``
blocks. Backpropagating through one sampled set of ``k`` branches, with every other block
passing the gradient through its shortcut only (post-add ReLU masks as in the real
forward), gives the gradient a path of length ``k`` contributes at the input of the first
block. The number of paths of length ``k`` is ``C(n, k)``, so the total contribution of
length ``k`` is ``C(n, k)`` times the mean magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import lgamma, log

import numpy as np

from ._graph import flat_norm, vjp
from .stream import TracedRun


@dataclass
class PathLengthResult:
    """Gradient magnitude against path length.

    Attributes:
        n_blocks: residual blocks in the stack.
        lengths: the path lengths ``k`` sampled.
        magnitude_mean: mean ``||dL/dx_0||`` over the sampled paths of each length.
        magnitude_std: their standard deviation.
        samples: samples per length.
        path_fraction: ``C(n, k) / 2^n``, the share of all paths that have length ``k``.
        log10_total: ``log10(C(n, k) * magnitude_mean)``, the total contribution of each
            length (logarithm, since ``C(n, k)`` overflows floats for deep nets).
        full_gradient_norm: ``||dL/dx_0||`` of the real backward, for scale.
        output_gradient_norm: ``||dL/dy||`` at the last block's output, where every path starts.
    """

    n_blocks: int
    lengths: list
    magnitude_mean: list
    magnitude_std: list
    samples: int
    path_fraction: list = field(default_factory=list)
    log10_total: list = field(default_factory=list)
    full_gradient_norm: float = float("nan")
    output_gradient_norm: float = float("nan")

    def rows(self) -> list:
        """One dict per length (for CSV/Markdown)."""
        return [
            {"k": k, "magnitude_mean": m, "magnitude_std": s, "path_fraction": p, "log10_total": t}
            for k, m, s, p, t in zip(self.lengths, self.magnitude_mean, self.magnitude_std,
                                     self.path_fraction, self.log10_total)
        ]


def _log10_comb(n: int, k: int) -> float:
    return (lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)) / log(10)


def path_length_distribution(model, x, target, loss=None, lengths=None, samples: int = 4, seed: int = 0):
    """Sample gradient magnitudes of paths of each length through the residual blocks.

    Args:
        model: a network of residual blocks (original or pre-activation; a plain block has
            no shortcut to take, so plain nets are refused).
        x, target, loss: the batch and loss as for
            :func:`~minires.analysis.trace_residual_stream`.
        lengths: path lengths to sample (default: every ``k`` from 0 to ``n``, or about
            25 evenly spaced values for deep nets).
        samples: random sets of branches per length.
        seed: seed of the sampling.

    Returns:
        A :class:`PathLengthResult`.

    Raises:
        ValueError: a plain block, blocks that do not chain, or a bad length.
    """
    if samples < 1:
        raise ValueError(f"path_length_distribution: samples must be >= 1, got {samples}")
    rng = np.random.default_rng(seed)
    with TracedRun(model, x, target, loss) as run:
        calls = run.calls
        n = len(calls)
        for c in calls:
            if c.s is None:
                raise ValueError(f"path_length_distribution: block {c.name} is plain (no shortcut)")
        for prev, nxt in zip(calls, calls[1:]):
            if nxt.x is not prev.y:
                raise ValueError(f"path_length_distribution: block {nxt.name} does not take {prev.name}'s output")
        if lengths is None:
            lengths = list(range(n + 1)) if n <= 24 else sorted(set(np.linspace(0, n, 25).round().astype(int).tolist()))
        lengths = [int(k) for k in lengths]
        for k in lengths:
            if not 0 <= k <= n:
                raise ValueError(f"path_length_distribution: lengths must lie in [0, {n}], got {k}")
        guard = run.guard()
        top = run.grad_of(calls[-1].y)
        means, stds = [], []
        for k in lengths:
            mags = []
            for _ in range(samples):
                chosen = set(rng.choice(n, size=k, replace=False).tolist()) if k else set()
                g = top
                for i in range(n - 1, -1, -1):
                    c = calls[i]
                    gp = vjp(c.y, g, c.pre, guard=guard) if c.parts.activation is not None else g
                    g = vjp(c.f if i in chosen else c.s, gp, c.x, guard=guard)
                mags.append(flat_norm(g))
            means.append(float(np.mean(mags)))
            stds.append(float(np.std(mags)))
        full = flat_norm(run.grad_of(calls[0].x))
        top_norm = flat_norm(top)
    fraction = [float(10 ** (_log10_comb(n, k) - n * log(2) / log(10))) for k in lengths]
    total = [(_log10_comb(n, k) + np.log10(m)) if m > 0 else float("-inf") for k, m in zip(lengths, means)]
    return PathLengthResult(n_blocks=n, lengths=lengths, magnitude_mean=means, magnitude_std=stds,
                            samples=samples, path_fraction=fraction, log10_total=[float(t) for t in total],
                            full_gradient_norm=full, output_gradient_norm=top_norm)


__all__ = ["PathLengthResult", "path_length_distribution"]
