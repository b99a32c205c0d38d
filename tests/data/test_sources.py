"""Where data is looked for, the missing-data message, and the embedded subset."""

import os

import numpy as np
import pytest

from minires.data import (EMBEDDED_PATH, DataNotFoundError, find_data, load_dataset, load_embedded,
                          search_roots)
from minires.data.embedded import decode_images, encode_images

from .cifar_fixtures import write_cifar10_python


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MINIRES_DATA", raising=False)
    monkeypatch.chdir(work)
    return home, work


def test_lookup_order(clean_env, tmp_path, rng):
    home, work = clean_env
    with pytest.raises(DataNotFoundError) as info:
        find_data()
    message = str(info.value)
    assert str(home / ".cache" / "minires" / "cifar-10-batches-py") in message
    assert str(work / "data" / "cifar-10-python.tar.gz") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "make_cifar10.py" in message and "--data embedded" in message

    write_cifar10_python(work / "data", rng)  # ./data is the last resort
    assert find_data() == str(work / "data" / "cifar-10-batches-py")
    write_cifar10_python(home / ".cache" / "minires", rng)  # the cache wins over ./data
    assert find_data() == str(home / ".cache" / "minires" / "cifar-10-batches-py")
    env = tmp_path / "env"
    write_cifar10_python(env, rng)
    os.environ["MINIRES_DATA"] = str(env)  # monkeypatch restores it
    assert find_data() == str(env / "cifar-10-batches-py")
    explicit = tmp_path / "explicit"
    write_cifar10_python(explicit, rng)
    assert find_data(explicit) == str(explicit)  # --data wins
    assert [why for _, why in search_roots(explicit)] == ["--data", "MINIRES_DATA", "default cache", "./data"]
    train, test = load_dataset(explicit)
    assert len(train) == 30 and len(test) == 6


def test_explicit_missing_path(clean_env, tmp_path):
    with pytest.raises(DataNotFoundError, match="--data .*nowhere: no such file or directory"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no cifar10 data inside.*\n.*To get cifar10"):
        load_dataset(tmp_path / "empty")


def test_embedded_subset():
    assert os.path.getsize(EMBEDDED_PATH) <= 5_000_000
    train, test = load_dataset("embedded")
    assert train.images.shape == (2000, 3, 32, 32) and test.images.shape == (1000, 3, 32, 32)
    assert np.all(np.bincount(train.labels, minlength=10) == 200)
    assert np.all(np.bincount(test.labels, minlength=10) == 100)
    assert train.classes[0] == "airplane"
    # real photographs: neighbouring pixels are strongly correlated, unlike noise
    x = train.images[:200].astype(np.float64)
    corr = np.corrcoef(x[..., :-1].ravel(), x[..., 1:].ravel())[0, 1]
    assert corr > 0.8
    with pytest.raises(ValueError, match="CIFAR-10 subset"):
        load_dataset("embedded", "cifar100")


def test_embedded_codec_roundtrip(rng):
    images = rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    images[2, 0] = 255  # extreme colour differences
    images[2, 1] = 0
    np.testing.assert_array_equal(decode_images(encode_images(images)), images)


def test_embedded_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_embedded.py"):
        load_embedded(str(tmp_path / "none.npz"))
