"""Reverse-mode traversal: topological order, gradient accumulation, buffer release.

One traversal serves both ``Tensor.backward`` (every reached leaf accumulates into its
``.grad``) and :func:`grad` (the gradients arriving at chosen tensors are returned, no
leaf's ``.grad`` changes, and only the ops on a path from the outputs to those tensors
run). The traversal is iterative (an explicit stack), so a chain of thousands of ops
backpropagates with Python's default recursion limit. It reads the graph and writes only
to ``.grad`` of leaves (backward) and of ``retain_grad`` tensors, so two threads may run
it on one graph kept with ``retain_graph=True``.
"""

from __future__ import annotations

from .. import backend
from ..backend import get_array_module

_FREED = (
    "trying to backward through a graph a second time (its buffers were freed after the "
    "first backward); pass retain_graph=True to the first backward"
)


def topological_order(roots) -> list:
    """Tensors reachable from ``roots`` (a tensor or a list) through recorded ops, each after its inputs.

    The walk stops at an op whose buffers were released (its links to the inputs are gone).
    """
    order = []
    visited = set()
    stack = [(root, False) for root in reversed(_as_list(roots))]
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
        if fn is None or fn.released:
            continue
        for parent in fn.parents:
            if parent is not None and parent.requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    return order


def _as_list(tensors) -> list:
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def _accumulate(current, new):
    return new if current is None else current + new


def _needed(order, targets) -> set:
    """Ids of the tensors whose gradient the traversal computes.

    ``targets is None`` (backward): all of them. Otherwise a tensor is needed when it is
    a target or one of its op's inputs is needed (a path leads from it to a target).
    """
    needed = set()
    for tensor in order:  # inputs come before the tensors computed from them
        fn = tensor._ctx
        if (targets is None or id(tensor) in targets
                or (fn is not None and not fn.released
                    and any(p is not None and id(p) in needed for p in fn.parents))):
            needed.add(id(tensor))
    return needed


def _run_hooks(tensor, g):
    from .tensor import Tensor  # noqa: PLC0415

    for hook in list(tensor._hooks.values()):
        replaced = hook(Tensor(g))
        if replaced is not None:
            g = replaced.data if isinstance(replaced, Tensor) else replaced
    return g


def _backward_through(fn, g, grads: dict, needed: set) -> None:
    """Run ``fn.backward(g)`` and add each needed input's gradient into ``grads`` (by id)."""
    input_grads = fn.backward(g)
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    if len(input_grads) != len(fn.parents):
        raise RuntimeError(
            f"{type(fn).__name__}.backward returned {len(input_grads)} gradients "
            f"for {len(fn.parents)} inputs"
        )
    for parent, pg in zip(fn.parents, input_grads):
        if parent is None or pg is None or not parent.requires_grad or id(parent) not in needed:
            continue
        if pg.shape != parent.data.shape:
            raise RuntimeError(
                f"{type(fn).__name__}.backward gave a gradient of shape {tuple(pg.shape)} "
                f"for an input of shape {tuple(parent.data.shape)}"
            )
        grads[id(parent)] = _accumulate(grads.get(id(parent)), pg)


def backpropagate(roots, root_grads, retain_graph: bool = False, targets=None) -> list:
    """The one reverse traversal behind ``Tensor.backward`` and :func:`grad`.

    Args:
        roots: the tensors to differentiate (a list).
        root_grads: one array per root, shaped like it (the upstream gradient).
        retain_graph: keep the saved buffers of the ops that ran, so they can run again.
        targets: ``None`` to accumulate into every reached leaf's ``.grad`` (backward);
            or a list of tensors whose arriving gradients are returned. Then the
            traversal treats them as leaves for accumulation (their hooks run first, as
            on any tensor), goes past one only towards another target, and leaves every
            leaf's ``.grad`` as it was.

    Returns:
        One array (or ``None`` where no gradient arrived) per target; ``[]`` for backward.
    """
    order = topological_order(roots)
    target_ids = None if targets is None else {id(t) for t in targets}
    needed = _needed(order, target_ids)
    freed = any(t._ctx is not None and t._ctx.released for t in order)  # by an earlier pass
    if freed and targets is None:
        raise RuntimeError(_FREED)
    grads = {}
    for root, g in zip(roots, root_grads):
        grads[id(root)] = _accumulate(grads.get(id(root)), g)
    arrived = {}
    for tensor in reversed(order):  # each tensor before its op's inputs
        key = id(tensor)
        g = grads.pop(key, None)
        if g is None or key not in needed:
            continue
        if tensor._hooks:
            g = _run_hooks(tensor, g)
        if target_ids is not None and key in target_ids:
            arrived[key] = g  # a target: its gradient is complete here
        fn = tensor._ctx
        if fn is None:
            if targets is None:  # backward reached a leaf: accumulate into .grad
                tensor.grad = _accumulate(tensor.grad, g)
            continue
        if tensor._retains_grad:
            tensor.grad = _accumulate(tensor.grad, g)
        if fn.released or not any(p is not None and id(p) in needed for p in fn.parents):
            continue  # a target with no further target above it
        _backward_through(fn, g, grads, needed)
        if not retain_graph:
            fn.release()
    if targets is None:
        return []
    if freed and len(arrived) < len(target_ids):
        raise RuntimeError(_FREED)  # the missing target may lie behind the freed op
    return [arrived.get(id(t)) for t in targets]


def run_backward(root, grad, retain_graph: bool = False) -> None:
    """Backpropagate ``grad`` (an array shaped like ``root``) into the leaves' ``.grad``."""
    backpropagate([root], [grad], retain_graph=retain_graph)


def _seed(index, output, grad_output):
    """The upstream gradient array of ``output``: ``grad_output`` checked, or ones for a scalar."""
    from .tensor import Tensor  # noqa: PLC0415

    xp = get_array_module(output.data)
    if grad_output is None:
        if output.data.size != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        return xp.ones_like(output.data)
    grad_output = grad_output.data if isinstance(grad_output, Tensor) else grad_output
    if backend.array_device(grad_output) != output.device:
        raise ValueError(f"grad: grad_output[{index}] is on {backend.array_device(grad_output)}, "
                         f"output[{index}] on {output.device}")
    grad_output = xp.asarray(grad_output, dtype=output.dtype)
    if grad_output.shape != output.data.shape:
        raise RuntimeError(f"Mismatch in shape: grad_output[{index}] has a shape of "
                           f"{tuple(grad_output.shape)} and output[{index}] has a shape of {output.shape}")
    return grad_output


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, allow_unused: bool = False) -> tuple:
    """Gradients of ``outputs`` with respect to ``inputs``, as ``torch.autograd.grad``.

    Computes ``sum_k (d outputs[k] / d inputs[j])^T grad_outputs[k]`` for each ``j`` by
    one reverse traversal of the recorded graph. No ``.grad`` of a leaf changes (tensors
    that called ``retain_grad`` on the way still get theirs, as in PyTorch); hooks
    registered with ``register_hook`` run as in backward. ``inputs`` may be non-leaf
    tensors: the gradient arriving at each is returned, and ops below them run only on
    the way to another input.

    Args:
        outputs: a ``Tensor`` or a sequence of them (requiring grad).
        inputs: a ``Tensor`` or a sequence of them (requiring grad).
        grad_outputs: one array, ``Tensor`` or ``None`` per output, shaped like it
            (``None`` means ones and is allowed for one-element outputs only); a single
            value when ``outputs`` is a single tensor.
        retain_graph: keep the saved buffers of the ops that ran (default ``False``).
        allow_unused: return ``None`` for an input no gradient reaches instead of raising.

    Returns:
        A tuple with one ``Tensor`` (not requiring grad) or ``None`` per input.

    Raises:
        RuntimeError: a non-scalar output without a grad_output, a shape mismatch, a
            tensor that does not require grad, an unused input (unless allowed), or a
            graph freed by an earlier pass.
    """
    from .tensor import Tensor  # noqa: PLC0415

    outputs, inputs = _as_list(outputs), _as_list(inputs)
    grad_outputs = [None] * len(outputs) if grad_outputs is None else _as_list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: expected one grad_output per output, got {len(grad_outputs)} "
                         f"for {len(outputs)}")
    for index, output in enumerate(outputs):
        if not output.requires_grad:
            raise RuntimeError(f"element {index} of tensors does not require grad and does not have a grad_fn")
    if not all(t.requires_grad for t in inputs):
        raise RuntimeError("One of the differentiated Tensors does not require grad")
    seeds = [_seed(i, out, g) for i, (out, g) in enumerate(zip(outputs, grad_outputs))]
    arrived = backpropagate(outputs, seeds, retain_graph=bool(retain_graph), targets=inputs)
    for index, g in enumerate(arrived):
        if g is None and not allow_unused:
            raise RuntimeError(f"The differentiated Tensor at index {index} appears to not have been "
                               "used in the graph. Set allow_unused=True if this is the desired behavior.")
    return tuple(None if g is None else Tensor(g) for g in arrived)
