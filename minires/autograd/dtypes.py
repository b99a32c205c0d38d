"""Default dtypes and PyTorch's type promotion (``result_type``), for tensors and the numbers mixed with them."""

from __future__ import annotations

import numbers

import numpy as np

DEFAULT_FLOAT = np.dtype(np.float32)
DEFAULT_INT = np.dtype(np.int64)
_CATEGORY_DEFAULT = (np.dtype(np.bool_), DEFAULT_INT, DEFAULT_FLOAT)  # bool < integer < float
_KIND_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}


def resolve_dtype(dtype):
    """``dtype`` (a NumPy dtype, type or name) as a ``np.dtype``; ``None`` stays ``None``."""
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}") from None


def _is_number(operand) -> bool:
    """A Python or NumPy number, as opposed to a tensor."""
    return isinstance(operand, (numbers.Number, np.generic))


def category(operand) -> int:
    """0 for bool, 1 for integer, 2 for floating (a Tensor or a real number)."""
    if not _is_number(operand):
        return _KIND_CATEGORY[operand.dtype.kind]
    if isinstance(operand, (bool, np.bool_)):
        return 0
    return 1 if isinstance(operand, numbers.Integral) else 2


def result_type(*operands) -> np.dtype:
    """The dtype that arithmetic on ``operands`` computes in: PyTorch's promotion (``torch.result_type``).

    The result's category (bool < integer < float) is the highest among the operands. Its
    dtype comes from the operands of that category with the highest priority: dimensioned
    tensors, else 0-d tensors (each group promoted as NumPy does), else Python or NumPy
    numbers, which give their category's default (bool, int64, float32). So
    ``int64_tensor * 1.5`` is float32 (NumPy: float64), ``int32_tensor + 1`` stays int32,
    ``bool_tensor + 1`` is int64 and ``float32_tensor + float64_0d_tensor`` is float32.

    Args:
        operands: Tensors and real numbers (bool, int, float, NumPy scalars).
    """
    highest = max(category(x) for x in operands)
    tensors = [x for x in operands if not _is_number(x) and category(x) == highest]
    for group in ([t for t in tensors if t.ndim > 0], [t for t in tensors if t.ndim == 0]):
        if group:
            return np.result_type(*(t.dtype for t in group))
    return _CATEGORY_DEFAULT[highest]
