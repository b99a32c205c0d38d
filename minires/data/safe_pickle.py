"""A restricted unpickler for CIFAR batch files: NumPy array reconstruction only.

The CIFAR "python version" archives hold pickles. A pickle can name any importable
callable and run it while loading, so a batch file from an untrusted mirror could run
code. :func:`safe_load` allows only the handful of globals that a pickled NumPy array
needs and refuses everything else before calling it.
"""

from __future__ import annotations

import codecs
import io
import pickle

import numpy as np

# (module, name) pairs a CIFAR batch needs: arrays pickled by NumPy 1.x and 2.x.
_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle named something other than NumPy array reconstruction."""


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(
            f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): only latin-1 text is allowed"
        )
    return codecs.encode(text, "latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only NumPy array globals (nothing else is ever imported)."""

    def find_class(self, module, name):  # noqa: D102
        if (module, name) in _ARRAY_GLOBALS:
            if name == "_reconstruct":
                return np.ndarray.__reduce__(np.zeros(0))[0]
            if name == "scalar":
                return _numpy_scalar()
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise UnsafePickleError(
            f"refusing to load a pickle that references {module}.{name}: CIFAR batch files may only "
            "contain NumPy arrays, lists, dicts, numbers and strings (the file is corrupt or was "
            "tampered with; nothing in it was run)"
        )


def _numpy_scalar():
    """``numpy.core.multiarray.scalar`` under either NumPy major version."""
    try:
        from numpy._core.multiarray import scalar  # noqa: PLC0415
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import scalar  # noqa: PLC0415
    return scalar


def safe_load(data, source: str = "<bytes>"):
    """Unpickle CIFAR batch bytes allowing only NumPy array reconstruction.

    Args:
        data: the pickle bytes, or a binary file object.
        source: a name for error messages (the file path).

    Returns:
        The unpickled object; strings of Python 2 pickles come back as ``bytes``
        (``encoding='bytes'``, as for the original CIFAR files).

    Raises:
        UnsafePickleError: the pickle names a global other than NumPy array reconstruction.
        ValueError: the bytes are not a readable pickle.
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        return RestrictedUnpickler(stream, encoding="bytes").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{source}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{source}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None
