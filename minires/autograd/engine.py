"""Reverse-mode traversal: topological order, gradient accumulation, buffer release.

The traversal is iterative (an explicit stack), so a chain of thousands of ops
backpropagates with Python's default recursion limit.
"""

from __future__ import annotations

from ..backend import get_array_module


def topological_order(root) -> list:
    """Tensors reachable from ``root`` through recorded ops, each after its inputs."""
    order = []
    visited = set()
    stack = [(root, False)]
    while stack:
        tensor, expanded = stack.pop()
        key = id(tensor)
        if expanded:
            order.append(tensor)
            continue
        if key in visited:
            continue
        visited.add(key)
        stack.append((tensor, True))
        fn = tensor._ctx
        if fn is None:
            continue
        if fn.released:
            raise RuntimeError(
                "trying to backward through a graph a second time (its buffers were freed "
                "after the first backward); pass retain_graph=True to the first backward"
            )
        for parent in fn.parents:
            if parent is not None and parent.requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    return order


def _accumulate(current, new):
    return new if current is None else current + new


def run_backward(root, grad, retain_graph: bool = False) -> None:
    """Backpropagate ``grad`` (an array shaped like ``root``) through ``root``'s graph."""
    from .tensor import Tensor  # noqa: PLC0415

    order = topological_order(root)
    grads = {id(root): grad}
    for tensor in reversed(order):
        g = grads.pop(id(tensor), None)
        if g is None:
            continue
        if tensor._hooks:
            for hook in tensor._hooks:
                replaced = hook(Tensor(g))
                if replaced is not None:
                    g = replaced.data if isinstance(replaced, Tensor) else replaced
        fn = tensor._ctx
        if fn is None:  # leaf: accumulate into .grad
            tensor.grad = _accumulate(tensor.grad, g)
            continue
        if tensor._retains_grad:
            tensor.grad = _accumulate(tensor.grad, g)
        input_grads = fn.backward(g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(fn.parents):
            raise RuntimeError(
                f"{type(fn).__name__}.backward returned {len(input_grads)} gradients "
                f"for {len(fn.parents)} inputs"
            )
        for parent, pg in zip(fn.parents, input_grads):
            if parent is None or pg is None or not parent.requires_grad:
                continue
            if pg.shape != parent.data.shape:
                raise RuntimeError(
                    f"{type(fn).__name__}.backward gave a gradient of shape {tuple(pg.shape)} "
                    f"for an input of shape {tuple(parent.data.shape)}"
                )
            key = id(parent)
            grads[key] = _accumulate(grads.get(key), pg)
        if not retain_graph:
            fn.release()


def ones_like(array):
    xp = get_array_module(array)
    return xp.ones_like(array)
