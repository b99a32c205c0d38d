"""Datasets and augmentation: CIFAR readers, downloads, the embedded subset, the batch loader.

Example:
    >>> from minires.data import load_dataset, Loader, channel_stats
    >>> train, test = load_dataset("embedded")
    >>> mean, std = channel_stats(train.images)
    >>> loader = Loader(train, 128, mean, std, train=True, seed=0)
"""

from .augment import (apply_augmentation, channel_stats, cutout, horizontal_flip, normalize, random_crop,
                      sample_keys, sample_params, sample_params_for)
from .cifar import (CIFAR10, CIFAR10_CLASSES, CIFAR100, ChecksumWarning, Dataset, check_labels, decode_binary,
                    get_layout, md5_of, read_archive, read_binary, read_cifar, read_python_archive, read_python_dir)
from .cifar_archive import CorruptArchiveError
from .download import DownloadError, download
from .embedded import EMBEDDED_PATH, load_embedded
from .loader import Loader, epoch_order, step_generator
from .normalization import normalization_stats, parse_normalize
from .safe_pickle import UnsafePickleError, safe_load
from .sources import DataNotFoundError, download_cifar, find_data, load_dataset, search_roots

__all__ = [
    "Dataset", "Loader", "load_dataset", "load_embedded", "find_data", "search_roots", "download",
    "download_cifar", "read_cifar", "read_python_dir", "read_python_archive", "read_binary", "decode_binary",
    "safe_load", "UnsafePickleError", "DownloadError", "DataNotFoundError", "ChecksumWarning", "get_layout",
    "md5_of", "CIFAR10", "CIFAR100", "CIFAR10_CLASSES", "EMBEDDED_PATH", "channel_stats", "random_crop",
    "horizontal_flip", "normalize", "cutout", "sample_params", "sample_params_for", "sample_keys",
    "apply_augmentation", "epoch_order", "step_generator", "read_archive", "check_labels", "CorruptArchiveError",
    "normalization_stats", "parse_normalize",
]
