"""NumPy ``.npz`` archives of named arrays (read with ``allow_pickle=False``)."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .errors import CheckpointError


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` archive.

    Args:
        path: the archive.

    Returns:
        ``{name: array}`` in the archive's order; object arrays are refused
        (``allow_pickle=False``), so loading never runs code.

    Raises:
        CheckpointError: the file is not a readable ``.npz`` archive or holds an object array.
    """
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{os.fspath(path)!r} holds a single .npy array, expected an .npz archive")
        with archive:
            return {name: archive[name] for name in archive.files}
    except CheckpointError:
        raise
    except ValueError as exc:
        # np.load raises ValueError("Object arrays cannot be loaded when allow_pickle=False")
        raise CheckpointError(f"cannot read {os.fspath(path)!r} as .npz without pickle: {exc}") from exc
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{os.fspath(path)!r} is not a valid .npz archive ({type(exc).__name__}: {exc})") from exc


def write_npz(state: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write ``{name: array}`` as an uncompressed ``.npz`` archive (one ``name.npy`` per entry).

    Names are stored verbatim (dots allowed), so ``read_npz`` gives the same keys back.

    Args:
        state: names to NumPy arrays (numeric or bool dtypes; no object arrays).
        path: the file to write (overwritten).
    """
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in state.items():
            with archive.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
