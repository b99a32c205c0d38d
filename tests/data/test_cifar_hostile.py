"""Hostile and broken CIFAR files: each refused with a clear error, cheaply (no torch, files made here)."""

import io
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest

from minires.data import (CIFAR10, CorruptArchiveError, UnsafePickleError, read_archive, read_cifar,
                          read_python_archive, safe_load)

from ..resource_bounds import assert_refused_cheaply
from .cifar_fixtures import py2_dumps, write_cifar10_binary, write_cifar10_python


def _batch(labels, data=None, **extra):
    data = np.zeros((len(labels), 3072), np.uint8) if data is None else data
    return py2_dumps({b"data": data, b"labels": labels, **extra})


def _replace(tmp_path, name, raw):
    (tmp_path / "cifar-10-batches-py" / name).write_bytes(raw)
    return tmp_path / "cifar-10-batches-py"


def test_uninitialised_array_constructor_is_refused(tmp_path, rng):
    """``numpy.ndarray((64, 3072), uint8)`` used to be accepted: training on memory that changed at every read."""
    raw = (b"\x80\x02}(U\x04dataq\x01cnumpy\nndarray\nK@M\x00\x0c\x86cnumpy\ndtype\nU\x02u1\x85R\x86R"
           b"U\x06labels]q\x02u.")
    with pytest.raises(UnsafePickleError, match=r"numpy\.ndarray\(\.\.\.\), which would create an array of "
                                                r"uninitialised memory"):
        safe_load(raw, "batch")
    write_cifar10_python(tmp_path, rng)
    folder = _replace(tmp_path, "data_batch_2", raw)
    assert_refused_cheaply(lambda: read_cifar(folder), UnsafePickleError, "data_batch_2: refusing numpy.ndarray")


@pytest.mark.parametrize("raw, message", [
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
     b"(K\x01M\x00\x04\x85cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
     b"b\x89U\x04abcdtb.", r"array data of 4 bytes for shape \(1024,\) of uint8"),
    (b"\x80\x02cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R.", r"numpy.dtype\('O8'\)"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncbuiltins\nlist\nK\x00\x85U\x01b\x87R.", "builtins.list"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R.",
     "never given its data"),
])
def test_array_stand_ins_accept_only_arrays_built_from_their_bytes(raw, message):
    assert_refused_cheaply(lambda: safe_load(raw, "batch"), UnsafePickleError, message)


def test_real_numpy_pickles_still_load(rng):
    """What NumPy itself writes (protocols 2 to 5, both byte orders, Fortran order, scalars) loads exactly."""
    values = {b"a": rng.integers(0, 256, (3, 5), dtype=np.uint8), b"f": np.asfortranarray(rng.random((2, 3))),
              b"big": np.arange(4, dtype=">i4"), b"s": np.int64(7), b"labels": [1, 2]}
    for protocol in (2, 3, 4, 5):
        loaded = safe_load(pickle.dumps(values, protocol=protocol))
        for key, value in values.items():
            np.testing.assert_array_equal(loaded[key], value)
        assert loaded[b"big"].dtype.isnative and loaded[b"s"] == 7


@pytest.mark.parametrize("labels, message", [
    ([0, 1, -100, 2, 3, 4], "label -100 at index 2 is outside"),
    ([0, 1, 10, 2, 3, 4], "label 10 at index 2 is outside"),
    ([0, 1, 3.7, 2, 3, 4], "labels must be a list of integers, found float 3.7"),
    ([0, 1, True, 2, 3, 4], "labels must be a list of integers, found bool True"),
    ([0, 1, 2**80, 2, 3, 4], "label 1208925819614629174706176 at index 2 is outside"),
])
def test_labels_must_be_integers_in_range(tmp_path, rng, labels, message):
    write_cifar10_python(tmp_path, rng)
    folder = _replace(tmp_path, "data_batch_4", _batch(labels))
    with pytest.raises(ValueError, match=rf"data_batch_4: {message}"):
        read_cifar(folder)


def test_class_names_must_match_the_layout(tmp_path, rng):
    write_cifar10_python(tmp_path, rng)
    folder = _replace(tmp_path, "batches.meta", py2_dumps({b"label_names": [b"c%d" % i for i in range(100)]}))
    with pytest.raises(ValueError, match=r"batches\.meta: 100 class names, but cifar10 has 10 classes"):
        read_cifar(folder)
    write_cifar10_binary(tmp_path / "bin", rng)
    (tmp_path / "bin" / "cifar-10-batches-bin" / "batches.meta.txt").write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"batches\.meta\.txt: 3 class names, but cifar10 has 10"):
        read_cifar(tmp_path / "bin")


def test_nested_lists_and_memo_attacks_in_batches_are_cheap(tmp_path, rng):
    laughs = []
    for _ in range(12):  # 10**12 leaves, 12 levels (deeper nesting is refused as such)
        laughs = [laughs] * 10
    write_cifar10_python(tmp_path, rng)
    folder = _replace(tmp_path, "data_batch_1", _batch(laughs[:6]))
    assert_refused_cheaply(lambda: read_cifar(folder), ValueError, "labels must be a list of integers, found list")
    folder = _replace(tmp_path, "data_batch_1", py2_dumps({b"data": laughs, b"labels": [0]}))
    assert_refused_cheaply(lambda: read_cifar(folder), ValueError, r"expected 'data' uint8 of shape \(N, 3072\), "
                                                                   "got list")
    deep = b"\x80\x02}U\x04data" + b"]" * 20_000 + b"a" * 19_999 + b"s."  # {b"data": [[[...]]]}, 20,000 deep
    folder = _replace(tmp_path, "data_batch_1", deep)
    assert_refused_cheaply(lambda: read_cifar(folder), ValueError, "nested deeper than any CIFAR batch")
    folder = _replace(tmp_path, "data_batch_1", b"\x80\x02]r\x00\x00\x00\x40.")
    assert_refused_cheaply(lambda: read_cifar(folder), ValueError,
                           "data_batch_1: not a readable CIFAR pickle .*memo index is 1,073,741,824.*tampered")


def _tar_gz(path, members):
    """``members``: ``[(name, bytes or (claimed size, zero-filled))]`` written in that order."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, int):
                info.size, stream = data, _Zeros(data)
            else:
                info.size, stream = len(data), io.BytesIO(data)
            tar.addfile(info, stream)


class _Zeros(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n

    def readable(self):
        return True


def _official_members(tmp_path, rng):
    write_cifar10_python(tmp_path, rng)
    folder = tmp_path / "cifar-10-batches-py"
    return [(f"cifar-10-batches-py/{n}", (folder / n).read_bytes()) for n in sorted(os.listdir(folder))]


def test_only_exact_member_paths_count_and_duplicates_are_refused(tmp_path, rng):
    members = _official_members(tmp_path, rng)
    decoy = _batch([9] * 6, data=np.full((6, 3072), 255, np.uint8))
    archive = tmp_path / "x.tar.gz"
    _tar_gz(archive, [("elsewhere/data_batch_1", decoy), ("cifar-10-batches-py/sub/data_batch_1", decoy)] + members)
    train, _ = read_python_archive(archive)
    expected = safe_load(dict(members)["cifar-10-batches-py/data_batch_1"])
    np.testing.assert_array_equal(train.labels[:6], expected[b"labels"])
    np.testing.assert_array_equal(train.images[:6].reshape(6, -1), expected[b"data"])
    _tar_gz(archive, members + [("./cifar-10-batches-py/data_batch_1", decoy)])
    with pytest.raises(CorruptArchiveError, match=r"holds 'cifar-10-batches-py/data_batch_1' twice"):
        read_python_archive(archive)


def test_archive_kind_comes_from_its_members_not_its_name(tmp_path, rng):
    members = _official_members(tmp_path, rng)
    misleading = tmp_path / "cifar-10-python-binary.tar.gz"  # "bin" in the name, python version inside
    _tar_gz(misleading, members)
    train, test = read_cifar(misleading)
    assert len(train) == 30 and len(test) == 6
    write_cifar10_binary(tmp_path / "b", rng, tar=True)
    shutil.move(tmp_path / "b" / "cifar-10-binary.tar.gz", tmp_path / "plain.tar.gz")
    assert len(read_cifar(tmp_path / "plain.tar.gz")[0]) == 25


def test_crc_errors_are_reported_as_corrupt_archives(tmp_path, rng):
    members = _official_members(tmp_path, rng)
    archive = tmp_path / "cifar-10-python.tar.gz"
    _tar_gz(archive, members)
    raw = bytearray(archive.read_bytes())
    raw[-6] ^= 0xFF  # inside the gzip trailer's CRC-32: every member decompresses, the check at the end fails
    archive.write_bytes(bytes(raw))
    with pytest.raises(CorruptArchiveError, match=r"cifar-10-python\.tar\.gz: not a readable tar archive, or a "
                                                  r"corrupt .*CRC.*download it again"):
        read_cifar(archive)
    for position in (len(raw) // 2, len(raw) * 3 // 4):  # damaged data: a zlib error or a CRC mismatch
        damaged = bytearray(raw)
        damaged[-6] ^= 0xFF  # (undo the trailer damage above)
        damaged[position] ^= 0x55
        archive.write_bytes(bytes(damaged))
        with pytest.raises(CorruptArchiveError, match=r"cifar-10-python\.tar\.gz: not a readable tar archive, or a "
                                                      r"corrupt"):
            read_cifar(archive)


def test_oversized_and_too_many_members_are_refused_before_decompressing(tmp_path, rng):
    members = _official_members(tmp_path, rng)
    limit = 10000 * (3072 + 256) + (1 << 20)
    bomb = tmp_path / "bomb.tar.gz"
    _tar_gz(bomb, [("cifar-10-batches-py/data_batch_1", 64 << 20)] + members[1:])
    assert bomb.stat().st_size < 1 << 20
    assert_refused_cheaply(lambda: read_cifar(bomb), CorruptArchiveError,
                           rf"entry 'cifar-10-batches-py/data_batch_1' claims 67,108,864 bytes, more than any "
                           rf"CIFAR file there holds \({limit:,}\)")
    readme = tmp_path / "readme.tar.gz"
    _tar_gz(readme, [("readme.html", 64 << 20)] + members)
    assert_refused_cheaply(lambda: read_cifar(readme), CorruptArchiveError, "entry 'readme.html' claims")
    many = tmp_path / "many.tar.gz"
    _tar_gz(many, [(f"f{i}", b"") for i in range(100)] + members)
    assert_refused_cheaply(lambda: read_cifar(many), CorruptArchiveError, "more than 64 entries")


def test_oversized_files_in_directories_are_not_read(tmp_path, rng):
    write_cifar10_python(tmp_path, rng)
    big = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(big, "wb") as f:
        f.truncate(64 << 20)  # sparse: costs no disk
    assert_refused_cheaply(lambda: read_cifar(tmp_path), ValueError,
                           r"test_batch: 67,108,864 bytes, more than the cifar10 file test_batch can hold")


def test_archives_without_the_official_paths(tmp_path):
    archive = tmp_path / "other.tar.gz"
    _tar_gz(archive, [("data_batch_1", b"x")])
    with pytest.raises(ValueError, match=r"no cifar10 files at their official paths \(cifar-10-batches-py/\.\.\. or "
                                         r"cifar-10-batches-bin/\.\.\.\)"):
        read_archive(archive, CIFAR10)
