"""Checks on a pickle's opcodes before it is unpickled: memo indexes and size.

The C unpickler grows its memo table to the largest index a pickle names: the eight
bytes ``\\x80\\x02]r\\x00\\x00\\x00\\x40.`` make it allocate 16 GB. :func:`check_pickle` walks
the opcodes with :func:`pickletools.genops` (which builds nothing) and refuses memo
indexes and opcode counts past the limits, so the unpickler that runs next allocates
at most a bounded multiple of the pickle's size.
"""

from __future__ import annotations

import pickletools

from .errors import CheckpointError
from .limits import ReadLimits, over_limit

_MEMO_INDEX_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def check_pickle(stream, source: str, limits: ReadLimits, hint: str | None = None) -> None:
    """Refuse the pickle at ``stream``'s position if it breaks ``limits``; leave the position unchanged.

    Args:
        stream: a seekable binary stream (``io.BytesIO``: reads past its end are cheap)
            positioned at the start of a pickle.
        source: the file, for messages.
        limits: ``max_pickle_ops`` and ``max_memo`` are checked.
        hint: replaces the "raise the limit" advice in the message (where raising makes no sense).

    Raises:
        ResourceLimitError: too many opcodes or a memo index past ``max_memo``.
        CheckpointError: the bytes are not a complete pickle.
    """
    start = stream.tell()
    try:
        _walk(stream, source, limits, hint)
    except CheckpointError:
        raise
    except Exception as exc:  # genops reports malformed streams as ValueError and friends
        raise CheckpointError(f"{source!r}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from None
    finally:
        stream.seek(start)


def _walk(stream, source, limits, hint):
    ops = memoized = 0
    for opcode, arg, _ in pickletools.genops(stream):
        ops += 1
        if ops > limits.max_pickle_ops:
            raise _with_hint(over_limit(source, "the number of pickle opcodes", ops, limits.max_pickle_ops,
                                        "max_pickle_ops"), hint)
        if opcode.name == "MEMOIZE":
            index, memoized = memoized, memoized + 1
        elif opcode.name in _MEMO_INDEX_OPS:
            index = arg
        else:
            continue
        if not 0 <= index < limits.max_memo:
            raise _with_hint(over_limit(source, "a pickle memo index", index, limits.max_memo, "max_memo"), hint)


def _with_hint(error: CheckpointError, hint: str | None) -> CheckpointError:
    if hint is None:
        return error
    message = str(error).split("; refusing")[0]
    return type(error)(f"{message}; {hint}")
