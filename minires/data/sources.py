"""Where datasets are looked for, and the message when they are not found.

Order: an explicit path (``--data PATH``), then the ``MINIRES_DATA`` environment
variable, then ``~/.cache/minires``, then ``./data`` (where torchvision puts CIFAR).
``'embedded'`` selects the CIFAR-10 subset shipped inside the package.
"""

from __future__ import annotations

import os

from .. import config
from .cifar import Dataset, candidates, get_layout, read_cifar
from .download import download
from .embedded import load_embedded


class DataNotFoundError(FileNotFoundError):
    """No dataset at any of the places looked at; the message says how to get one."""


def search_roots(path=None) -> list:
    """The directories (or files) searched, in order, with the reason each is searched."""
    roots = []
    if path is not None:
        roots.append((os.path.expanduser(os.fspath(path)), "--data"))
    env = config.get("data")
    if env:
        roots.append((os.path.expanduser(env), "MINIRES_DATA"))
    roots.append((os.path.join(os.path.expanduser("~"), ".cache", "minires"), "default cache"))
    roots.append((os.path.abspath("data"), "./data"))
    return roots


def _how_to_get(name: str) -> str:
    layout = get_layout(name)
    return (
        f"To get {layout.name}: download {layout.url} (md5 {layout.archive_md5}) and either put the "
        f".tar.gz (or its extracted {layout.folder}/ folder) in ~/.cache/minires or ./data, or pass "
        f"--data /path/to/it, or set MINIRES_DATA; `minires train --download` fetches it into "
        f"~/.cache/minires for you. If you have the JPEG re-encoded copy (cifar10-jpeg.tar.gz with "
        f"make_cifar10.py), run `python make_cifar10.py OUT_DIR` and pass --data OUT_DIR. "
        f"`--data embedded` trains on the small subset shipped with minires.")


def find_data(path=None, name: str = "cifar10"):
    """Locate a dataset without reading it.

    Args:
        path: an explicit path (``--data``), or ``None`` to search the default places.
        name: ``'cifar10'`` or ``'cifar100'``.

    Returns:
        The path of the archive or directory found.

    Raises:
        DataNotFoundError: nothing found; the message lists where it looked and how to get the data.
    """
    layout = get_layout(name)
    looked = []
    for root, why in search_roots(path):
        if why == "--data":
            if os.path.exists(root):
                return root
            raise DataNotFoundError(f"--data {root}: no such file or directory.\n{_how_to_get(name)}")
        for candidate in candidates(root, layout):
            looked.append(candidate)
            if os.path.exists(candidate):
                return candidate
    lines = "\n  ".join(looked)
    raise DataNotFoundError(f"no {layout.name} data found. Looked in:\n  {lines}\n{_how_to_get(name)}")


def load_dataset(path=None, name: str = "cifar10", check_md5: bool = False) -> tuple[Dataset, Dataset]:
    """Load a (train, test) pair from ``path``, ``'embedded'``, or the default places.

    Args:
        path: ``'embedded'``, an archive/directory, or ``None`` (search, see :func:`search_roots`).
        name: ``'cifar10'`` or ``'cifar100'``.
        check_md5: warn when files differ from the official md5 sums.

    Returns:
        ``(train, test)`` :class:`~minires.data.cifar.Dataset` pair.
    """
    if path is not None and os.fspath(path) == "embedded":
        if get_layout(name).name != "cifar10":
            raise ValueError(f"--data embedded is a CIFAR-10 subset; it cannot serve {name}")
        return load_embedded()
    found = find_data(path, name)
    try:
        return read_cifar(found, name, check_md5)
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"{exc}\n{_how_to_get(name)}") from None


def download_cifar(name: str = "cifar10", root=None, progress: bool = True) -> str:
    """Download the official python-version archive into ``root`` (default ``~/.cache/minires``).

    The md5 is checked; a mismatch is an error and leaves no file. The archive is read in
    place by :func:`load_dataset` (no extraction needed).

    Returns:
        The archive path.
    """
    layout = get_layout(name)
    root = os.path.expanduser(os.fspath(root) if root is not None else os.path.join("~", ".cache", "minires"))
    dest = os.path.join(root, layout.archive)
    if os.path.isfile(dest):
        return dest
    return download(layout.url, dest, md5=layout.archive_md5, progress=progress)
