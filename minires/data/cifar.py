"""CIFAR-10 / CIFAR-100 readers for the official "python version" and "binary version".

Accepted sources, for CIFAR-10 (CIFAR-100 alike with its own names):

- ``cifar-10-python.tar.gz`` (read in place, nothing extracted) or its extracted
  ``cifar-10-batches-py/`` directory (``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
  ``batches.meta``);
- ``cifar-10-binary.tar.gz`` or ``cifar-10-batches-bin/`` (``data_batch_N.bin``: records of
  1 label byte + 3072 pixel bytes; CIFAR-100: 1 coarse + 1 fine label byte + 3072 bytes);
- a directory that contains any of the above (what ``--data PATH`` usually names).

Images come back as ``uint8`` arrays of shape ``(N, 3, 32, 32)`` (the file's own layout:
1024 red, 1024 green, 1024 blue values per row) and labels as ``int64``.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import warnings
from dataclasses import dataclass, field

import numpy as np

from .safe_pickle import safe_load

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class CifarLayout:
    """Names and official checksums of one CIFAR variant."""

    name: str
    num_classes: int
    url: str
    archive: str
    archive_md5: str
    folder: str
    train_files: tuple
    test_files: tuple
    meta_file: str
    label_key: bytes
    bin_url: str
    bin_archive: str
    bin_md5: str
    bin_folder: str
    bin_train_files: tuple
    bin_test_files: tuple
    bin_label_bytes: int
    file_md5: dict = field(default_factory=dict)


CIFAR10 = CifarLayout(
    name="cifar10", num_classes=10,
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive="cifar-10-python.tar.gz", archive_md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
    meta_file="batches.meta", label_key=b"labels",
    bin_url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    bin_archive="cifar-10-binary.tar.gz", bin_md5="c32a1d4ab5d03f1284b67883e8d87530",
    bin_folder="cifar-10-batches-bin",
    bin_train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)), bin_test_files=("test_batch.bin",),
    bin_label_bytes=1,
    file_md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
)

CIFAR100 = CifarLayout(
    name="cifar100", num_classes=100,
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive="cifar-100-python.tar.gz", archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    folder="cifar-100-python", train_files=("train",), test_files=("test",),
    meta_file="meta", label_key=b"fine_labels",
    bin_url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    bin_archive="cifar-100-binary.tar.gz", bin_md5="03b5dce01913d631647c71ecec9e9cb8",
    bin_folder="cifar-100-binary", bin_train_files=("train.bin",), bin_test_files=("test.bin",),
    bin_label_bytes=2,
    file_md5={
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    },
)

LAYOUTS = {"cifar10": CIFAR10, "cifar100": CIFAR100}


class ChecksumWarning(UserWarning):
    """A local file's md5 differs from the official one (re-encoded copies exist)."""


@dataclass
class Dataset:
    """An in-memory image classification split.

    Attributes:
        images: ``uint8`` array ``(N, 3, H, W)``.
        labels: ``int64`` array ``(N,)``.
        classes: class names (index = label).
        name: a short description of where it came from.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple
    name: str = ""

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"expected {len(self.images)} labels, got shape {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def get_layout(name: str) -> CifarLayout:
    """The :class:`CifarLayout` for ``'cifar10'`` or ``'cifar100'``."""
    key = str(name).lower().replace("-", "")
    if key not in LAYOUTS:
        raise ValueError(f"unknown dataset {name!r}: expected 'cifar10' or 'cifar100'")
    return LAYOUTS[key]


def md5_of(path, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _warn_md5(path, expected):
    actual = md5_of(path)
    if actual != expected:
        warnings.warn(
            f"{path}: md5 {actual} differs from the official {expected}; using it anyway "
            "(re-encoded or repackaged copies of CIFAR differ, e.g. a JPEG re-encoding)",
            ChecksumWarning, stacklevel=3)
        return False
    return True


# --- python version ---------------------------------------------------------------------

def _decode_batch(obj, source: str, label_key: bytes):
    """Images and labels of one unpickled batch dict, checked."""
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict in the CIFAR batch file, got {type(obj).__name__}")
    keys = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    label_name = label_key.decode()
    if "data" not in keys or label_name not in keys:
        raise ValueError(f"{source}: expected keys 'data' and {label_name!r}, found {sorted(keys)}")
    data = np.asarray(keys["data"])
    labels = np.asarray(keys[label_name], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{source}: expected 'data' uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{source}: {data.shape[0]} images but {labels.shape} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _meta_classes(obj, layout: CifarLayout):
    key = "label_names" if layout.name == "cifar10" else "fine_label_names"
    if isinstance(obj, dict):
        for k, v in obj.items():
            if (k.decode("latin1") if isinstance(k, bytes) else k) == key:
                return tuple(x.decode("latin1") if isinstance(x, bytes) else str(x) for x in v)
    return CIFAR10_CLASSES if layout.name == "cifar10" else tuple(f"class_{i}" for i in range(100))


def _concat(parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_python_dir(path, layout: CifarLayout = CIFAR10, check_md5: bool = False):
    """Read an extracted python-version directory (``cifar-10-batches-py``).

    Args:
        path: the directory holding the batch files.
        layout: :data:`CIFAR10` or :data:`CIFAR100`.
        check_md5: compare each file with the official md5 and warn on a mismatch.

    Returns:
        ``(train, test)`` :class:`Dataset` pair.
    """
    splits = []
    for files in (layout.train_files, layout.test_files):
        parts = []
        for name in files:
            file = os.path.join(path, name)
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{path}: missing {name} (expected {', '.join(files)})")
            if check_md5 and name in layout.file_md5:
                _warn_md5(file, layout.file_md5[name])
            with open(file, "rb") as f:
                parts.append(_decode_batch(safe_load(f, file), file, layout.label_key))
        splits.append(_concat(parts))
    meta = os.path.join(path, layout.meta_file)
    meta_obj = None
    if os.path.isfile(meta):
        with open(meta, "rb") as f:
            meta_obj = safe_load(f, meta)
    classes = _meta_classes(meta_obj, layout)
    return tuple(Dataset(x, y, classes, f"{layout.name} {s} ({path})")
                 for (x, y), s in zip(splits, ("train", "test")))


def _tar_members(tar, wanted):
    """Map basename -> bytes for the regular members of ``tar`` whose basename is wanted."""
    found = {}
    for member in tar:
        base = os.path.basename(member.name)
        if member.isfile() and base in wanted:
            found[base] = tar.extractfile(member).read()
    return found


def read_python_archive(path, layout: CifarLayout = CIFAR10, check_md5: bool = False):
    """Read a python-version ``.tar.gz`` in place (nothing is extracted to disk).

    Args:
        path: the archive.
        layout: :data:`CIFAR10` or :data:`CIFAR100`.
        check_md5: compare the archive with the official md5 and warn on a mismatch.

    Returns:
        ``(train, test)`` :class:`Dataset` pair.
    """
    if check_md5:
        _warn_md5(path, layout.archive_md5)
    wanted = set(layout.train_files + layout.test_files + (layout.meta_file,))
    try:
        with tarfile.open(path, "r:*") as tar:
            found = _tar_members(tar, wanted)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable tar archive ({exc})") from None
    splits = []
    for files in (layout.train_files, layout.test_files):
        missing = [n for n in files if n not in found]
        if missing:
            raise ValueError(f"{path}: archive lacks {', '.join(missing)}; is it the {layout.name} python version?")
        splits.append(_concat([_decode_batch(safe_load(found[n], f"{path}:{n}"), f"{path}:{n}", layout.label_key)
                               for n in files]))
    meta = safe_load(found[layout.meta_file], f"{path}:{layout.meta_file}") if layout.meta_file in found else None
    classes = _meta_classes(meta, layout)
    return tuple(Dataset(x, y, classes, f"{layout.name} {s} ({path})")
                 for (x, y), s in zip(splits, ("train", "test")))


# --- binary version ---------------------------------------------------------------------

def decode_binary(raw: bytes, layout: CifarLayout = CIFAR10, source: str = "<bytes>"):
    """Decode binary-version records: label byte(s) then 3072 pixel bytes each.

    Returns:
        ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``; for CIFAR-100 the fine label.
    """
    record = layout.bin_label_bytes + 3072
    if len(raw) == 0 or len(raw) % record:
        raise ValueError(f"{source}: size {len(raw)} is not a multiple of the {record}-byte {layout.name} record")
    table = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = table[:, layout.bin_label_bytes - 1].astype(np.int64)
    if labels.max() >= layout.num_classes:
        raise ValueError(f"{source}: label {labels.max()} out of range for {layout.name}")
    return table[:, layout.bin_label_bytes:].reshape(-1, 3, 32, 32).copy(), labels


def _bin_classes(text, layout):
    names = tuple(s.strip() for s in text.decode("latin1").splitlines() if s.strip())
    return names if len(names) == layout.num_classes else _meta_classes(None, layout)


def read_binary(path, layout: CifarLayout = CIFAR10, check_md5: bool = False):
    """Read the binary version, from its ``.tar.gz`` or its extracted directory.

    Returns:
        ``(train, test)`` :class:`Dataset` pair.
    """
    meta_name = "batches.meta.txt" if layout.name == "cifar10" else "fine_label_names.txt"
    names = layout.bin_train_files + layout.bin_test_files + (meta_name,)
    if os.path.isdir(path):
        found = {}
        for n in names:
            file = os.path.join(path, n)
            if os.path.isfile(file):
                with open(file, "rb") as f:
                    found[n] = f.read()
    else:
        if check_md5:
            _warn_md5(path, layout.bin_md5)
        try:
            with tarfile.open(path, "r:*") as tar:
                found = _tar_members(tar, set(names))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable tar archive ({exc})") from None
    splits = []
    for files in (layout.bin_train_files, layout.bin_test_files):
        missing = [n for n in files if n not in found]
        if missing:
            raise ValueError(f"{path}: lacks {', '.join(missing)}; is it the {layout.name} binary version?")
        splits.append(_concat([decode_binary(found[n], layout, f"{path}:{n}") for n in files]))
    classes = _bin_classes(found[meta_name], layout) if meta_name in found else _meta_classes(None, layout)
    return tuple(Dataset(x, y, classes, f"{layout.name} {s} ({path})")
                 for (x, y), s in zip(splits, ("train", "test")))


def candidates(root, layout: CifarLayout):
    """The places inside ``root`` where ``layout`` may sit, in preference order."""
    return [os.path.join(root, layout.folder), os.path.join(root, layout.archive),
            os.path.join(root, layout.bin_folder), os.path.join(root, layout.bin_archive)]


def read_cifar(path, name: str = "cifar10", check_md5: bool = False):
    """Read CIFAR-10/100 from any accepted source (see the module docstring).

    Args:
        path: an archive, an extracted batch directory, or a directory containing either.
        name: ``'cifar10'`` or ``'cifar100'``.
        check_md5: compare with the official md5 sums and warn on a mismatch.

    Returns:
        ``(train, test)`` :class:`Dataset` pair.

    Raises:
        FileNotFoundError: nothing readable at ``path``.
        ValueError: a file is there but is not what it should be.
    """
    layout = get_layout(name)
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, layout.train_files[0])):
            return read_python_dir(path, layout, check_md5)
        if os.path.isfile(os.path.join(path, layout.bin_train_files[0])):
            return read_binary(path, layout, check_md5)
        for candidate in candidates(path, layout):
            if os.path.exists(candidate):
                return read_cifar(candidate, name, check_md5)
        raise FileNotFoundError(
            f"{path}: no {layout.name} data inside (looked for {', '.join(os.path.basename(c) for c in candidates(path, layout))})")
    if os.path.isfile(path):
        base = os.path.basename(path)
        if "bin" in base:
            return read_binary(path, layout, check_md5)
        return read_python_archive(path, layout, check_md5)
    raise FileNotFoundError(f"{path}: no such file or directory")
