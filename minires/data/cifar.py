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
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..io.errors import short_repr
from .cifar_archive import read_members
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

    def first(self, n: int) -> "Dataset":
        """The first ``n`` examples, named ``'<name>, first <n>'`` (the whole split when ``n`` is 0 or ``>= len``)."""
        if not n or n >= len(self):
            return self
        return Dataset(self.images[:n], self.labels[:n], self.classes, f"{self.name}, first {n}")

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


# --- sizes -------------------------------------------------------------------------------

_META_BYTES = 1 << 20


def _images_in(layout: CifarLayout, name: str) -> int:
    """The most images the official file ``name`` holds (a subset or re-encoding may hold fewer)."""
    if name in layout.train_files or name in layout.bin_train_files:
        return 50000 // len(layout.train_files)
    return 10000


def file_size_limit(layout: CifarLayout, name: str) -> int:
    """The most bytes the CIFAR file ``name`` can hold (records plus pickle overhead); nothing larger is read."""
    if name in layout.bin_train_files + layout.bin_test_files:
        return _images_in(layout, name) * (3072 + layout.bin_label_bytes)
    if name in layout.train_files + layout.test_files:
        return _images_in(layout, name) * (3072 + 256) + _META_BYTES
    return _META_BYTES


def _read_file(path: str, name: str, layout: CifarLayout) -> bytes:
    size, limit = os.path.getsize(path), file_size_limit(layout, name)
    if size > limit:
        raise ValueError(f"{path}: {size:,} bytes, more than the {layout.name} file {name} can hold ({limit:,}); "
                         "refusing to read it")
    with open(path, "rb") as f:
        return f.read()


# --- python version ---------------------------------------------------------------------

def _text_keys(obj: dict) -> dict:
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def check_labels(labels, num_classes: int, source: str) -> np.ndarray:
    """Labels as ``int64``, each an integer in ``[0, num_classes)``; anything else raises ``ValueError``."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"{source}: labels must be a flat integer array, got {labels.dtype} {labels.shape}")
    elif not isinstance(labels, (list, tuple)) or not all(type(v) is int for v in labels):
        bad = next((v for v in labels if type(v) is not int), labels) if isinstance(labels, (list, tuple)) else labels
        raise ValueError(f"{source}: labels must be a list of integers, found {type(bad).__name__} {short_repr(bad)}")
    values = np.array([min(max(int(v), -1), num_classes) for v in labels], dtype=np.int64) \
        if not isinstance(labels, np.ndarray) else labels.astype(np.int64)
    outside = (values < 0) | (values >= num_classes)
    if outside.any():
        index = int(np.argmax(outside))
        raise ValueError(f"{source}: label {labels[index]} at index {index} is outside [0, {num_classes})")
    return values


def _decode_batch(obj, source: str, layout: CifarLayout):
    """Images and labels of one unpickled batch dict, checked."""
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict in the CIFAR batch file, got {type(obj).__name__}")
    keys = _text_keys(obj)
    label_name = layout.label_key.decode()
    if "data" not in keys or label_name not in keys:
        raise ValueError(f"{source}: expected keys 'data' and {label_name!r}, found {sorted(map(str, keys))[:10]}")
    data = keys["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{source}: expected 'data' uint8 of shape (N, 3072), got {found}")
    labels = check_labels(keys[label_name], layout.num_classes, source)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{source}: {data.shape[0]} images but {labels.shape} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _check_class_names(names, layout: CifarLayout, source: str) -> tuple:
    if not isinstance(names, (list, tuple)) or not all(isinstance(x, (bytes, str)) for x in names):
        raise ValueError(f"{source}: class names must be a list of strings, got {type(names).__name__}")
    if len(names) != layout.num_classes:
        raise ValueError(f"{source}: {len(names)} class names, but {layout.name} has {layout.num_classes} classes")
    return tuple(x.decode("latin1") if isinstance(x, bytes) else x for x in names)


def _default_classes(layout: CifarLayout) -> tuple:
    return CIFAR10_CLASSES if layout.name == "cifar10" else tuple(f"class_{i}" for i in range(100))


def _meta_classes(obj, layout: CifarLayout, source: str = "meta"):
    """Class names from an unpickled meta file (``None``: no meta file, the default names)."""
    if obj is None:
        return _default_classes(layout)
    key = "label_names" if layout.name == "cifar10" else "fine_label_names"
    keys = _text_keys(obj) if isinstance(obj, dict) else {}
    if key not in keys:
        raise ValueError(f"{source}: expected a dict with {key!r}, got {type(obj).__name__}")
    return _check_class_names(keys[key], layout, source)


def _concat(parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _datasets(splits, classes, layout, where):
    return tuple(Dataset(x, y, classes, f"{layout.name} {s} ({where})")
                 for (x, y), s in zip(splits, ("train", "test")))


def _decode_python(raw: dict, layout: CifarLayout, where: str):
    """``(train, test)`` from ``{file name: pickle bytes}`` of the python version."""
    splits = [_concat([_decode_batch(safe_load(raw[n], f"{where}:{n}"), f"{where}:{n}", layout) for n in files])
              for files in (layout.train_files, layout.test_files)]
    meta = layout.meta_file
    meta_obj = safe_load(raw[meta], f"{where}:{meta}") if meta in raw else None
    return _datasets(splits, _meta_classes(meta_obj, layout, f"{where}:{meta}"), layout, where)


def read_python_dir(path, layout: CifarLayout = CIFAR10, check_md5: bool = False):
    """Read an extracted python-version directory (``cifar-10-batches-py``).

    Args:
        path: the directory holding the batch files.
        layout: :data:`CIFAR10` or :data:`CIFAR100`.
        check_md5: compare each file with the official md5 and warn on a mismatch.

    Returns:
        ``(train, test)`` :class:`Dataset` pair.

    Raises:
        FileNotFoundError: a batch file is missing.
        ValueError: a file is larger than that CIFAR file can be, or its content is wrong
            (labels outside the classes, a class-name count that does not match).
    """
    raw = {}
    for name in layout.train_files + layout.test_files + (layout.meta_file,):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            if name == layout.meta_file:
                continue
            expected = layout.train_files if name in layout.train_files else layout.test_files
            raise FileNotFoundError(f"{path}: missing {name} (expected {', '.join(expected)})")
        if check_md5 and name in layout.file_md5:
            _warn_md5(file, layout.file_md5[name])
        raw[name] = _read_file(file, name, layout)
    return _decode_python(raw, layout, os.fspath(path))


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
    if layout.bin_label_bytes == 2 and table[:, 0].max() >= 20:
        raise ValueError(f"{source}: coarse label {table[:, 0].max()} out of range for {layout.name} (20 superclasses)")
    return table[:, layout.bin_label_bytes:].reshape(-1, 3, 32, 32).copy(), labels


def _bin_meta_name(layout: CifarLayout) -> str:
    return "batches.meta.txt" if layout.name == "cifar10" else "fine_label_names.txt"


def _bin_classes(text, layout, source="meta"):
    names = [s.strip() for s in text.decode("latin1").splitlines() if s.strip()]
    return _check_class_names(names, layout, source)


def _decode_binary_files(raw: dict, layout: CifarLayout, where: str):
    splits = []
    for files in (layout.bin_train_files, layout.bin_test_files):
        missing = [n for n in files if n not in raw]
        if missing:
            raise ValueError(f"{where}: lacks {', '.join(missing)}; is it the {layout.name} binary version?")
        splits.append(_concat([decode_binary(raw[n], layout, f"{where}:{n}") for n in files]))
    meta = _bin_meta_name(layout)
    classes = _bin_classes(raw[meta], layout, f"{where}:{meta}") if meta in raw else _default_classes(layout)
    return _datasets(splits, classes, layout, where)


# --- archives -----------------------------------------------------------------------------

def _archive_paths(layout: CifarLayout, version: str) -> dict:
    """``{path inside the official archive: size limit}`` of one version (``'python'`` or ``'binary'``)."""
    if version == "python":
        folder, names = layout.folder, layout.train_files + layout.test_files + (layout.meta_file,)
    else:
        folder, names = layout.bin_folder, layout.bin_train_files + layout.bin_test_files + (_bin_meta_name(layout),)
    return {f"{folder}/{n}": file_size_limit(layout, n) for n in names}


def _read_archive(path, layout: CifarLayout, versions=("python", "binary")):
    """``(version, {file name: bytes})`` of the version found at its exact paths in the archive."""
    wanted = {p: limit for v in versions for p, limit in _archive_paths(layout, v).items()}
    found = read_members(path, wanted)
    for version in versions:
        paths = _archive_paths(layout, version)
        if any(p in found for p in paths):
            return version, {p.split("/", 1)[1]: found[p] for p in paths if p in found}
    expected = " or ".join(f"{next(iter(_archive_paths(layout, v))).split('/')[0]}/..." for v in versions)
    raise ValueError(f"{path}: no {layout.name} files at their official paths ({expected}); is it the "
                     f"{layout.name} archive?")


def _require(raw: dict, names: tuple, path, layout, version):
    missing = [n for n in names if n not in raw]
    if missing:
        raise ValueError(f"{path}: archive lacks {', '.join(missing)} (or a corrupt entry ended it early); "
                         f"is it the complete {layout.name} {version} version?")


def read_python_archive(path, layout: CifarLayout = CIFAR10, check_md5: bool = False):
    """Read a python-version ``.tar.gz`` in place (nothing is extracted to disk).

    Args:
        path: the archive.
        layout: :data:`CIFAR10` or :data:`CIFAR100`.
        check_md5: compare the archive with the official md5 and warn on a mismatch.

    Returns:
        ``(train, test)`` :class:`Dataset` pair.

    Raises:
        CorruptArchiveError: a CRC or format error, or sizes no CIFAR archive has.
        ValueError: files missing from their exact paths, or wrong content.
    """
    if check_md5:
        _warn_md5(path, layout.archive_md5)
    _, raw = _read_archive(path, layout, ("python",))
    _require(raw, layout.train_files + layout.test_files, path, layout, "python")
    return _decode_python(raw, layout, os.fspath(path))


def read_binary(path, layout: CifarLayout = CIFAR10, check_md5: bool = False):
    """Read the binary version, from its ``.tar.gz`` or its extracted directory.

    Returns:
        ``(train, test)`` :class:`Dataset` pair.
    """
    if os.path.isdir(path):
        names = layout.bin_train_files + layout.bin_test_files + (_bin_meta_name(layout),)
        raw = {n: _read_file(os.path.join(path, n), n, layout) for n in names if os.path.isfile(os.path.join(path, n))}
    else:
        if check_md5:
            _warn_md5(path, layout.bin_md5)
        _, raw = _read_archive(path, layout, ("binary",))
    return _decode_binary_files(raw, layout, os.fspath(path))


def read_archive(path, layout: CifarLayout = CIFAR10, check_md5: bool = False):
    """Read a CIFAR archive of either version, told apart by its members' paths (not its name).

    Returns:
        ``(train, test)`` :class:`Dataset` pair.
    """
    version, raw = _read_archive(path, layout)
    if check_md5:
        _warn_md5(path, layout.archive_md5 if version == "python" else layout.bin_md5)
    if version == "binary":
        return _decode_binary_files(raw, layout, os.fspath(path))
    _require(raw, layout.train_files + layout.test_files, path, layout, "python")
    return _decode_python(raw, layout, os.fspath(path))


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
        ValueError: a file is there but is not what it should be (corrupt archive, labels
            outside the classes, wrong class-name count, unsafe pickle, ...).
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
        return read_archive(path, layout, check_md5)
    raise FileNotFoundError(f"{path}: no such file or directory")
