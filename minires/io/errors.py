"""Exceptions raised by :mod:`minires.io` when a weight file cannot be read safely."""

import pickle


class CheckpointError(ValueError):
    """A weight file is missing a part, malformed, or holds something other than tensors.

    Subclasses ``ValueError`` so callers that already catch bad-input errors keep working.
    """


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A PyTorch checkpoint's pickle names a global that tensor storage does not need.

    Raised *before* the global is resolved, so nothing it names is imported or run.
    """
