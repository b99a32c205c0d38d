"""Which weight format a file holds, told from its bytes (the extension is only a hint).

PyTorch's loader never looks at the extension: ``.pth``, ``.pt``, ``.th``, ``.tar``,
``.pth.tar``, ``.bin``, ``.ckpt`` or none at all are all common for the same formats.
"""

from __future__ import annotations

import os
import struct

from .errors import CheckpointError
from .zip_records import open_zip

#: format id -> description, for messages and ``minires weights``
FORMATS = {
    "torch-zip": "PyTorch checkpoint (zip format, torch.save since 1.6)",
    "torch-legacy": "PyTorch checkpoint (legacy stream format, before 1.6)",
    "npz": "NumPy .npz archive",
    "safetensors": "safetensors",
}
#: extension -> the format it usually holds (used only when the bytes say nothing clear)
EXTENSION_HINTS = {".npz": "npz", ".safetensors": "safetensors", ".pth": "torch-legacy", ".pt": "torch-legacy",
                   ".th": "torch-legacy", ".tar": "torch-legacy", ".bin": "torch-legacy", ".ckpt": "torch-legacy"}
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def is_torch_pickle_record(name: str) -> bool:
    """Whether a zip record is the pickle of a ``torch.save`` checkpoint (``<name>/data.pkl``)."""
    return name.endswith("/data.pkl") and name.count("/") == 1


def _zip_kind(path) -> str:
    with open_zip(path, os.fspath(path)) as archive:
        names = archive.namelist()
    if any(is_torch_pickle_record(n) for n in names):
        return "torch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    raise CheckpointError(f"{os.fspath(path)!r} is a zip archive but neither a torch.save checkpoint (expected "
                          f"one '<name>/data.pkl') nor an .npz archive (not all members are .npy): {shown or 'empty'}")


def _looks_like_safetensors(head: bytes, file_size: int) -> bool:
    if len(head) < 9:
        return False
    (header_size,) = struct.unpack("<Q", head[:8])
    return 2 <= header_size <= file_size - 8 and head[8:9] == b"{"


def sniff_format(path: str | os.PathLike) -> str | None:
    """The format of ``path`` from its first bytes: a key of :data:`FORMATS`, or ``None`` if unknown.

    Raises:
        CheckpointError: the bytes are clearly a format that cannot hold weights (a single
            ``.npy`` array, the pre-0.4 tar checkpoint, a zip of something else).
    """
    source = os.fspath(path)
    with open(source, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _zip_kind(source)
    if head[:6] == b"\x93NUMPY":
        raise CheckpointError(f"{source!r} holds a single .npy array, not named weights; save a dict with "
                              "np.savez or minires.io.save_state_dict")
    if len(head) >= 262 and head[257:262] == b"ustar":
        raise CheckpointError(f"{source!r} is a tar archive: the pre-0.4 PyTorch tar checkpoint format is not "
                              "supported (re-save it with a recent torch.save)")
    if head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32]:
        return "torch-legacy"
    if _looks_like_safetensors(head, os.path.getsize(source)):
        return "safetensors"
    return None


def require_format(path: str | os.PathLike, allowed=tuple(FORMATS)) -> str:
    """:func:`sniff_format`, falling back to the extension's hint; raise if neither gives one of ``allowed``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the bytes are none of the supported formats (the message names
            the file, its first bytes and what was expected).
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no such weight file: {source!r}")
    kind = sniff_format(source)
    if kind is None:
        kind = next((fmt for ext, fmt in EXTENSION_HINTS.items() if source.lower().endswith(ext)), None)
    if kind not in allowed:
        with open(source, "rb") as f:
            head = f.read(16)
        expected = "; ".join(FORMATS[k] for k in allowed)
        found = f"it is a {FORMATS[kind]}" if kind else f"its first bytes are {head!r}"
        raise CheckpointError(f"{source!r} is not a weight file minires can read here: {found}, expected one of: "
                              f"{expected}")
    return kind
