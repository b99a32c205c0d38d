"""CIFAR readers on synthetic files in the official layouts; the restricted unpickler."""

import dataclasses
import io
import os
import pickle
import pickletools
import shutil
import tarfile

import numpy as np
import pytest

from minires.data import (CIFAR10, CIFAR100, ChecksumWarning, UnsafePickleError, decode_binary, md5_of,
                          read_binary, read_cifar, read_python_archive, safe_load)

from .cifar_fixtures import (py2_dumps, write_cifar10_binary, write_cifar10_python, write_cifar100_binary,
                             write_cifar100_python)


def _check(split, expected):
    x, y = expected
    np.testing.assert_array_equal(split.images, x)
    np.testing.assert_array_equal(split.labels, y)
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64


def test_fixture_is_python2_protocol2_pickle(tmp_path, rng):
    write_cifar10_python(tmp_path, rng)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    ops = [op.name for op, _, _ in pickletools.genops(raw)]
    assert raw[:2] == b"\x80\x02"  # protocol 2
    assert "SHORT_BINSTRING" in ops and "BINUNICODE" not in ops  # Python 2 str keys
    assert b"numpy.core.multiarray\n_reconstruct" in raw


def test_python_dir(tmp_path, rng):
    train, test = write_cifar10_python(tmp_path, rng)
    tr, te = read_cifar(tmp_path / "cifar-10-batches-py")
    _check(tr, train)
    _check(te, test)
    assert tr.classes == tuple(f"n{i}" for i in range(10))
    # pixel layout: row = 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes(), encoding="bytes")
    row = raw[b"data"][0]
    assert tr.images[0, 1, 2, 3] == row[1024 + 2 * 32 + 3]


def test_python_archive_and_root_search(tmp_path, rng):
    train, test = write_cifar10_python(tmp_path, rng, tar=True)
    shutil.rmtree(tmp_path / "cifar-10-batches-py")
    tr, te = read_python_archive(tmp_path / "cifar-10-python.tar.gz")
    _check(tr, train)
    _check(te, test)
    tr2, _ = read_cifar(tmp_path)  # a root holding the archive
    _check(tr2, train)


def test_cifar100_python_and_binary(tmp_path, rng):
    (xtr, ytr), (xte, yte) = write_cifar100_python(tmp_path, rng, tar=True)
    tr, te = read_cifar(tmp_path / "cifar-100-python.tar.gz", "cifar100")
    _check(tr, (xtr, ytr))
    _check(te, (xte, yte))
    assert tr.num_classes == 100 and tr.classes[5] == "c5"
    (btr, bte) = write_cifar100_binary(tmp_path / "bin", rng)
    tr, te = read_cifar(tmp_path / "bin", "cifar100")
    _check(tr, btr)  # the fine label (second byte) is the label
    _check(te, bte)


@pytest.mark.parametrize("as_tar", [False, True])
def test_binary(tmp_path, rng, as_tar):
    train, test = write_cifar10_binary(tmp_path, rng, tar=as_tar)
    if as_tar:
        shutil.rmtree(tmp_path / "cifar-10-batches-bin")
        tr, te = read_binary(tmp_path / "cifar-10-binary.tar.gz")
    else:
        tr, te = read_cifar(tmp_path)
    _check(tr, train)
    _check(te, test)
    assert tr.classes[3] == "b3"


def test_binary_bad_size_and_label():
    with pytest.raises(ValueError, match="not a multiple of the 3073-byte"):
        decode_binary(b"\x00" * 3074, CIFAR10)
    with pytest.raises(ValueError, match="out of range"):
        decode_binary(bytes([10]) + b"\x00" * 3072, CIFAR10)


def test_python3_protocol2_pickle_loads(rng):
    """A Python 3 protocol-2 pickle spells bytes as _codecs.encode(text, 'latin1'): allowed."""
    x = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    raw = pickle.dumps({b"data": x, b"labels": [1, 2]}, protocol=2)
    assert b"_codecs" in raw
    obj = safe_load(raw)
    np.testing.assert_array_equal(obj[b"data"], x)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, rng):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2)
    with pytest.raises(UnsafePickleError, match="refusing .*system"):
        safe_load(evil)
    assert not marker.exists()
    pickle.loads(evil)  # the same bytes do run code under the normal unpickler
    assert marker.exists()
    marker.unlink()

    # inside a real batch directory and inside an archive
    write_cifar10_python(tmp_path, rng)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(evil)
    with pytest.raises(UnsafePickleError, match="data_batch_3"):
        read_cifar(tmp_path)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as t:
        t.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.raises(UnsafePickleError):
        read_python_archive(tmp_path / "cifar-10-python.tar.gz")
    assert not marker.exists()


@pytest.mark.parametrize("target", [b"builtins\neval", b"subprocess\nPopen", b"numpy\nload"])
def test_other_globals_refused(target):
    raw = b"\x80\x02c" + target + b"\n)R."
    with pytest.raises(UnsafePickleError, match="refusing"):
        safe_load(raw)


def test_codecs_encode_only_latin1():
    raw = pickle.dumps(b"abc", protocol=2).replace(b"latin1", b"utf_7\x00"[:6])
    with pytest.raises((UnsafePickleError, ValueError)):
        safe_load(raw)


def test_garbage_and_wrong_content(tmp_path, rng):
    with pytest.raises(ValueError, match="not a readable CIFAR pickle"):
        safe_load(b"\x80\x02garbage")
    write_cifar10_python(tmp_path, rng)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(
        py2_dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"expected 'data' uint8 of shape \(N, 3072\)"):
        read_cifar(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_2")
    with pytest.raises(FileNotFoundError, match="missing data_batch_2"):
        read_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "x.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="not a readable tar"):
        read_python_archive(tmp_path / "x.tar.gz")


def test_md5_warning_on_local_archive(tmp_path, rng):
    write_cifar10_python(tmp_path, rng, tar=True)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with pytest.warns(ChecksumWarning, match="differs from the official"):
        read_python_archive(archive, check_md5=True)
    matching = dataclasses.replace(CIFAR10, archive_md5=md5_of(archive))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_python_archive(archive, matching, check_md5=True)
        read_python_archive(archive)  # no check by default


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="expected 'cifar10' or 'cifar100'"):
        read_cifar(tmp_path, "mnist")
    with pytest.raises(FileNotFoundError, match="no cifar10 data inside"):
        read_cifar(tmp_path)


def test_first_keeps_the_first_examples_and_says_so_in_the_name():
    from minires.data import Dataset

    images = np.arange(5 * 3 * 2 * 2, dtype=np.uint8).reshape(5, 3, 2, 2)
    data = Dataset(images, np.arange(5, dtype=np.int64), ("a", "b", "c", "d", "e"), "toy")
    head = data.first(2)
    assert len(head) == 2 and head.name == "toy, first 2" and head.classes == data.classes
    np.testing.assert_array_equal(head.images, images[:2])
    np.testing.assert_array_equal(head.labels, [0, 1])
    assert data.first(0) is data and data.first(5) is data and data.first(9) is data
