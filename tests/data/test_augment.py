"""Augmentation on known images against per-image reference loops; the loader."""

import numpy as np
import pytest

from minires.data import (Dataset, Loader, apply_augmentation, channel_stats, cutout, epoch_order,
                          horizontal_flip, normalize, random_crop, sample_params)


def _known_images(n=4, c=3, h=8, w=8):
    # every pixel holds a distinct value, so any misplaced pixel shows
    return (np.arange(n * c * h * w) % 251 + 1).astype(np.uint8).reshape(n, c, h, w)


def _crop_reference(images, offsets, padding):
    out = np.zeros_like(images)
    for i, (dy, dx) in enumerate(offsets):
        padded = np.pad(images[i], ((0, 0), (padding, padding), (padding, padding)))
        out[i] = padded[:, dy:dy + images.shape[2], dx:dx + images.shape[3]]
    return out


def test_crop_known_offsets():
    x = _known_images()
    offsets = np.array([[4, 4], [0, 0], [8, 8], [1, 7]])
    out = random_crop(x, offsets, padding=4)
    np.testing.assert_array_equal(out[0], x[0])  # offset = padding: unchanged
    # offset (0, 0): the image shifted down-right by 4, zeros in the top rows / left columns
    np.testing.assert_array_equal(out[1, :, 4:, 4:], x[1, :, :4, :4])
    assert not out[1, :, :4].any() and not out[1, :, :, :4].any()
    # offset (8, 8): shifted up-left
    np.testing.assert_array_equal(out[2, :, :4, :4], x[2, :, 4:, 4:])
    np.testing.assert_array_equal(out, _crop_reference(x, offsets, 4))


def test_crop_random_offsets_match_reference(rng):
    x = rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    params = sample_params(rng, 16, padding=4)
    assert params["offsets"].min() >= 0 and params["offsets"].max() <= 8
    np.testing.assert_array_equal(random_crop(x, params["offsets"], 4), _crop_reference(x, params["offsets"], 4))
    with pytest.raises(ValueError, match=r"offsets of shape \(16, 2\)"):
        random_crop(x, params["offsets"][:3], 4)


def test_flip():
    x = _known_images()
    flip = np.array([True, False, True, False])
    out = horizontal_flip(x, flip)
    np.testing.assert_array_equal(out[0], x[0, :, :, ::-1])
    np.testing.assert_array_equal(out[1], x[1])
    assert out[2, 1, 3, 0] == x[2, 1, 3, 7]


def test_normalize_and_stats(rng):
    x = rng.integers(0, 256, (10, 3, 5, 5), dtype=np.uint8)
    mean, std = channel_stats(x)
    ref = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-6)
    out = normalize(x, mean, std)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (ref - mean[None, :, None, None]) / std[None, :, None, None], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_cutout_reference(rng):
    x = np.ones((5, 2, 10, 10), np.float32)
    centers = np.array([[5, 5], [0, 0], [9, 9], [2, 7], [5, 0]])
    out = cutout(x, centers, 4)
    for i, (cy, cx) in enumerate(centers):
        ref = np.ones((10, 10), np.float32)
        ref[max(cy - 2, 0):max(cy + 2, 0), max(cx - 2, 0):max(cx + 2, 0)] = 0
        np.testing.assert_array_equal(out[i, 0], ref)
        np.testing.assert_array_equal(out[i, 1], ref)
    assert out[0].sum() == 2 * (100 - 16)  # a full 4x4 square
    assert out[1].sum() == 2 * (100 - 4)  # clipped at the corner


def test_apply_augmentation_composes(rng):
    x = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    params = sample_params(np.random.default_rng(3), 6, padding=4, flip=True, cutout_size=8)
    mean, std = np.array([0.5, 0.4, 0.3], np.float32), np.array([0.2, 0.25, 0.3], np.float32)
    out = apply_augmentation(x, params, mean, std, padding=4, cutout_size=8)
    ref = cutout(normalize(horizontal_flip(_crop_reference(x, params["offsets"], 4), params["flip"]), mean, std),
                 params["centers"], 8)
    np.testing.assert_array_equal(out, ref)


def _dataset(n=50, rng=None):
    rng = rng or np.random.default_rng(0)
    return Dataset(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n), tuple("abcdefghij"))


def test_loader_order_and_determinism():
    data = _dataset()
    mean, std = channel_stats(data.images)
    loader = Loader(data, 16, mean, std, train=True, seed=7)
    assert len(loader) == 4
    assert len(Loader(data, 16, mean, std, drop_last=True)) == 3
    batches = list(loader.epoch(2))
    assert [b[0] for b in batches] == [0, 1, 2, 3]
    labels = np.concatenate([b[2] for b in batches])
    np.testing.assert_array_equal(labels, data.labels[epoch_order(7, 2, 50)])
    assert sorted(epoch_order(7, 2, 50)) == list(range(50))
    assert not np.array_equal(epoch_order(7, 2, 50), epoch_order(7, 3, 50))
    # prefetching, direct access and resuming mid-epoch all give identical batches
    again = list(Loader(data, 16, mean, std, train=True, seed=7, prefetch=False).epoch(2))
    resumed = list(loader.epoch(2, start_step=2))
    for (s1, x1, y1), (s2, x2, y2) in zip(batches, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    for s, x, y in resumed:
        np.testing.assert_array_equal(x, batches[s][1])
        x_direct, _ = loader.batch(2, s)
        np.testing.assert_array_equal(x, x_direct)
    assert x.dtype == np.float32 and y.dtype == np.int64


def test_loader_eval_mode_is_plain():
    data = _dataset(20)
    mean, std = channel_stats(data.images)
    loader = Loader(data, 8, mean, std, train=False)
    x = np.concatenate([b[1] for b in loader.epoch(0)])
    np.testing.assert_array_equal(x, normalize(data.images, mean, std))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        Loader(data, 0, mean, std)
    with pytest.raises(IndexError):
        loader.batch(0, 3)


def test_loader_augments_differently_per_step():
    data = _dataset(32)
    mean, std = channel_stats(data.images)
    loader = Loader(Dataset(np.repeat(data.images[:1], 32, 0), data.labels, data.classes), 32, mean, std,
                    train=True)
    x, _ = loader.batch(0, 0)
    # one image repeated: the augmented copies differ (random crops/flips)
    assert len({x[i].tobytes() for i in range(32)}) > 10


@pytest.mark.gpu
def test_augmentation_gpu_matches_cpu(rng):
    from minires.backend import as_numpy, to_device

    x = rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    params = sample_params(np.random.default_rng(0), 8, cutout_size=8)
    mean, std = np.array([0.5, 0.4, 0.3], np.float32), np.array([0.2, 0.25, 0.3], np.float32)
    cpu = apply_augmentation(x, params, mean, std, 4, 8)
    gpu = apply_augmentation(to_device(x, "cuda"), params, to_device(mean, "cuda"), to_device(std, "cuda"), 4, 8)
    np.testing.assert_allclose(as_numpy(gpu), cpu, rtol=1e-6, atol=1e-6)
    data = _dataset(40)
    m, s = channel_stats(data.images)
    a = list(Loader(data, 16, m, s, train=True, device="cpu").epoch(1))
    b = list(Loader(data, 16, m, s, train=True, device="cuda").epoch(1))
    for (_, xa, ya), (_, xb, yb) in zip(a, b):
        np.testing.assert_allclose(as_numpy(xb), xa, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(as_numpy(yb), ya)


# --- augmentation keyed by (seed, epoch, example): the same at any batch split -------------

def test_keyed_params_depend_only_on_the_example():
    from minires.data import sample_params_for

    indices = np.array([5, 17, 3, 999, 0, 42])
    whole = sample_params_for(1, 2, indices, cutout_size=8)
    for part in (indices[:2], indices[2:5], indices[5:], indices[::-1]):
        params = sample_params_for(1, 2, part, cutout_size=8)
        where = [list(indices).index(i) for i in part]
        for key in ("offsets", "flip", "centers"):
            np.testing.assert_array_equal(params[key], whole[key][where])
    # another seed or epoch draws anew; turning cutout off leaves the crops and flips alone
    assert not np.array_equal(sample_params_for(1, 3, indices)["offsets"], whole["offsets"])
    assert not np.array_equal(sample_params_for(2, 2, indices)["offsets"], whole["offsets"])
    no_cutout = sample_params_for(1, 2, indices)
    np.testing.assert_array_equal(no_cutout["offsets"], whole["offsets"])
    assert "centers" not in no_cutout and "offsets" not in sample_params_for(1, 2, indices, padding=0)


def test_keyed_params_are_uniform_and_independent():
    from minires.data import sample_params_for

    n = 90_000
    params = sample_params_for(0, 0, np.arange(n), height=32, width=32, padding=4, cutout_size=8)
    rows, cols = params["offsets"].T
    for values, high in ((rows, 9), (cols, 9), (params["centers"][:, 0], 32), (params["centers"][:, 1], 32)):
        counts = np.bincount(values, minlength=high)
        assert len(counts) == high and values.min() == 0
        expected = n / high
        assert np.abs(counts - expected).max() < 5 * np.sqrt(expected), counts  # 5 sigma
    assert abs(params["flip"].mean() - 0.5) < 5 * 0.5 / np.sqrt(n)
    # neighbouring examples and different quantities are uncorrelated
    for a, b in ((rows[:-1], rows[1:]), (rows, cols), (rows, params["centers"][:, 0]),
                 (params["flip"][:-1], params["flip"][1:])):
        assert abs(np.corrcoef(a.astype(float), b.astype(float))[0, 1]) < 5 / np.sqrt(n)


def test_loader_sampler_serves_parts_of_the_global_batch():
    from minires.distributed import DistributedSampler

    data = _dataset(40)
    mean, std = channel_stats(data.images)
    whole = Loader(data, 16, mean, std, train=True, seed=3, cutout=8)
    parts = [Loader(data, 16, mean, std, train=True, seed=3, cutout=8, sampler=DistributedSampler(r, 3))
             for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3] and [whole.global_batch(s) for s in range(3)] == [16, 16, 8]
    for (step, x, y), *rank_batches in zip(whole.epoch(1), *(p.epoch(1) for p in parts)):
        assert [len(b[2]) for b in rank_batches] == [DistributedSampler(r, 3).part_size(len(y)) for r in range(3)]
        np.testing.assert_array_equal(np.concatenate([b[1] for b in rank_batches]), x)
        np.testing.assert_array_equal(np.concatenate([b[2] for b in rank_batches]), y)


def test_loader_steps_and_dtype():
    data = _dataset(50)
    mean, std = channel_stats(data.images)
    loader = Loader(data, 16, mean, std, train=False, dtype=np.float64)
    served = list(loader.epoch(0, steps=[1, 3]))
    assert [s for s, _, _ in served] == [1, 3]
    np.testing.assert_array_equal(served[1][1], normalize(data.images[48:], mean, std).astype(np.float64))
    assert served[0][1].dtype == np.float64
    assert [s for s, _, _ in loader.epoch(0, start_step=2, steps=[0, 2, 3])] == [2, 3]
    with pytest.raises(ValueError, match="floating dtype"):
        Loader(data, 16, mean, std, dtype=np.int32)
