"""Plain helper functions shared by test modules (fixtures live in ``conftest.py``)."""

from collections import Counter

from minires import nn


def randomise_bn(module, rng):
    """Non-trivial BN affine parameters and running statistics in every ``BatchNorm2d`` of ``module``."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data[...] = 1 + 0.3 * rng.standard_normal(m.weight.shape)
            m.bias.data[...] = 0.2 * rng.standard_normal(m.bias.shape)
            m.running_mean.data[...] = 0.1 * rng.standard_normal(m.running_mean.shape)
            m.running_var.data[...] = 1 + rng.random(m.running_var.shape)
    return module


def graph_ops(out) -> Counter:
    """Op class names in the autograd graph below ``out`` (before backward releases it)."""
    counts, seen, stack = Counter(), set(), [out._ctx]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        counts[type(fn).__name__] += 1
        stack.extend(p._ctx for p in getattr(fn, "parents", ()) if p is not None)
    return counts


#: the fields of a metrics record that are timings (they differ between equal runs)
TIMING_FIELDS = ("seconds", "train_seconds", "images_per_s")


def without_timings(records) -> list:
    """``records`` (metrics dicts) without their :data:`TIMING_FIELDS`, for comparing two runs."""
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]
