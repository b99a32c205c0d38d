"""Exceptions raised by :mod:`minires.io` when a weight file cannot be read safely."""

import pickle
import reprlib


class CheckpointError(ValueError):
    """A weight file is missing a part, malformed, or holds something other than tensors.

    Subclasses ``ValueError`` so callers that already catch bad-input errors keep working.
    """


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A PyTorch checkpoint's pickle names a global that tensor storage does not need.

    Raised *before* the global is resolved, so nothing it names is imported or run.
    """


class ResourceLimitError(CheckpointError):
    """A weight file asks for more memory, data or nesting than :class:`~minires.io.ReadLimits` allow.

    Raised before the memory is allocated or the data decompressed. The message says
    which limit to raise when the file is genuine.
    """


class _ShortRepr(reprlib.Repr):
    def repr_int(self, x, level):
        if x.bit_length() > 128:  # repr of a huge int is slow or refused (sys.set_int_max_str_digits)
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_SHORT = _ShortRepr()
_SHORT.maxlevel, _SHORT.maxtuple, _SHORT.maxlist, _SHORT.maxdict = 2, 6, 6, 6
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 80, 80, 40


def short_repr(value) -> str:
    """``repr`` of something read from a file, bounded in length and nesting.

    Values from a hostile file may be nested deeply or share sub-objects exponentially
    often; the built-in ``repr`` would then run out of stack or memory.
    """
    return _SHORT.repr(value)
