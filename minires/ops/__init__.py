"""Differentiable ops, one module per family; each ``class Op(Function)`` and its wrapper."""
