"""--normalize choices: parsing, canonical forms, the statistics each stands for."""

import numpy as np
import pytest

from minires.data import channel_stats, normalization_stats, parse_normalize


@pytest.mark.parametrize("spec, canonical", [
    ("train", "train"), (" ImageNet ", "imagenet"), ("cifar", "cifar"), ("none", "none"),
    ("0.5,0.25", "0.5,0.25"), ("0.5, 0.5, 0.5, 0.25, 0.25, 0.25", "0.5,0.25"),
    ("0.4914,0.4822,0.4465,0.2023,0.1994,0.2010", "0.4914,0.4822,0.4465,0.2023,0.1994,0.201"),
])
def test_parse_normalize_canonical_forms(spec, canonical):
    assert parse_normalize(spec) == canonical
    assert parse_normalize(canonical) == canonical


@pytest.mark.parametrize("spec, message", [
    ("imagnet", "must be one of train, cifar, imagenet, none"), ("0.5", "got '0.5'"), ("1,2,3", "got '1,2,3'"),
    ("0.5,0", "standard deviations must be > 0"), ("nan,1", "got 'nan,1'"), (None, "must be a string"),
])
def test_parse_normalize_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_normalize(spec)


def test_statistics(rng):
    images = rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    for got, expected in zip(normalization_stats("train", "cifar10", images), channel_stats(images)):
        np.testing.assert_array_equal(got, expected)
    mean, std = normalization_stats("imagenet", "cifar100")
    np.testing.assert_allclose(mean, [0.485, 0.456, 0.406])
    np.testing.assert_allclose(std, [0.229, 0.224, 0.225])
    assert normalization_stats("cifar", "cifar10")[0][0] == np.float32(0.4914)
    assert normalization_stats("cifar", "cifar100")[1][2] == np.float32(0.2762)
    mean, std = normalization_stats("none", "cifar10")
    assert mean.tolist() == [0, 0, 0] and std.tolist() == [1, 1, 1] and mean.dtype == np.float32
    mean, std = normalization_stats("0.5,0.25", "cifar10")
    assert mean.tolist() == [0.5] * 3 and std.tolist() == [0.25] * 3
    with pytest.raises(ValueError, match="needs the training images"):
        normalization_stats("train", "cifar10")
