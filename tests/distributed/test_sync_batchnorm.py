"""SyncBatchNorm: the global batch's statistics, whatever the split over ranks (ranks as threads here)."""

import numpy as np
import pytest

import minires as mr
import minires.nn as nn
from minires.distributed import LocalCommunicator, SyncBatchNorm, convert_sync_batchnorm, part_bounds
from minires.distributed.sync_batchnorm import combine_moments

from .fake_comm import run_ranks


def _reference(x, upstream, weight, bias, momentum=0.1):
    """One BatchNorm2d on the whole batch: output, input gradient, parameter gradients, running stats."""
    bn = nn.BatchNorm2d(x.shape[1], momentum=momentum).double()
    bn.weight.data[...] = weight
    bn.bias.data[...] = bias
    xt = mr.tensor(x, requires_grad=True)
    out = bn(xt)
    out.backward(upstream)
    return {"out": out.data, "grad_x": xt.grad, "grad_w": bn.weight.grad, "grad_b": bn.bias.grad,
            "running_mean": bn.running_mean.data, "running_var": bn.running_var.data}


def _sync_part(comm, x, upstream, weight, bias, momentum=0.1):
    """This rank's SyncBatchNorm on its part of the batch."""
    start, stop = part_bounds(len(x), comm.rank, comm.size)
    bn = SyncBatchNorm(x.shape[1], momentum=momentum, comm=comm).to(x.dtype)
    bn.weight.data[...] = weight
    bn.bias.data[...] = bias
    xt = mr.tensor(x[start:stop], requires_grad=True)
    out = bn(xt)
    out.backward(upstream[start:stop])
    return {"out": out.data, "grad_x": xt.grad, "grad_w": bn.weight.grad, "grad_b": bn.bias.grad,
            "running_mean": bn.running_mean.data.copy(), "running_var": bn.running_var.data.copy()}


@pytest.mark.parametrize("size, batch", [(1, 6), (2, 6), (3, 10), (4, 5)])
def test_sync_batchnorm_equals_batchnorm_on_the_global_batch(rng, size, batch):
    x = rng.standard_normal((batch, 3, 4, 5)) * 2 + 5  # a mean far from 0: no cancellation allowed
    upstream = rng.standard_normal(x.shape)
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    ref = _reference(x, upstream, weight, bias)
    parts = run_ranks(size, lambda comm: _sync_part(comm, x, upstream, weight, bias))
    for key in ("out", "grad_x"):
        np.testing.assert_allclose(np.concatenate([p[key] for p in parts]), ref[key], rtol=1e-12, atol=1e-12)
    for key in ("grad_w", "grad_b"):  # each rank holds its part; the gradient allreduce adds them
        np.testing.assert_allclose(sum(p[key] for p in parts), ref[key], rtol=1e-12, atol=1e-12)
    for p in parts:  # running statistics move with the global statistics, identically on every rank
        for key in ("running_mean", "running_var"):
            np.testing.assert_allclose(p[key], ref[key], rtol=1e-13, atol=1e-15)
            assert p[key].tobytes() == parts[0][key].tobytes()


def test_float32_statistics_are_accurate_for_large_means(rng):
    x = (rng.standard_normal((8, 2, 6, 6)) * 0.01 + 300).astype(np.float32)
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    ref = _reference(x.astype(np.float64), upstream.astype(np.float64), np.ones(2), np.zeros(2))
    parts = run_ranks(2, lambda comm: _sync_part(comm, x, upstream, np.ones(2), np.zeros(2)))
    out = np.concatenate([p["out"] for p in parts])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref["out"], rtol=2e-3, atol=2e-3)  # float32 inputs at 300 +- 0.01


def test_combine_moments_matches_numpy(rng):
    parts = [rng.standard_normal((n, 3)) + 4 for n in (5, 1, 7)]
    rows = np.stack([np.concatenate([[len(p)], p.mean(0), ((p - p.mean(0)) ** 2).sum(0)]) for p in parts])
    total, mean, var = combine_moments(rows)
    everything = np.concatenate(parts)
    assert total == 13
    np.testing.assert_allclose(mean, everything.mean(0), rtol=1e-14)
    np.testing.assert_allclose(var, everything.var(0), rtol=1e-13)


def test_gradcheck_one_rank(rng):
    bn = SyncBatchNorm(2, comm=LocalCommunicator()).double()
    bn.weight.data[...] = rng.standard_normal(2)
    x = mr.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    bn.weight.requires_grad = True
    assert mr.gradcheck(lambda t, w: bn(t), [x, bn.weight])


def test_eval_mode_uses_running_statistics_and_no_communication(rng):
    class NoCollectives(LocalCommunicator):
        def allgather(self, array):
            raise AssertionError("evaluation must not communicate")

        allreduce = allgather

    bn = SyncBatchNorm(3, comm=NoCollectives()).double()
    bn.running_mean.data[...] = [1.0, 2.0, 3.0]
    plain = nn.BatchNorm2d(3).double()
    plain.load_state_dict(bn.state_dict())
    bn.eval(), plain.eval()
    x = mr.tensor(rng.standard_normal((2, 3, 4, 4)))
    np.testing.assert_array_equal(bn(x).data, plain(x).data)


def test_needs_more_than_one_value_over_all_ranks():
    bn = SyncBatchNorm(2, comm=LocalCommunicator())
    with pytest.raises(ValueError, match="more than 1 value per channel over all ranks"):
        bn(mr.tensor(np.ones((1, 2), np.float32)))


def test_no_affine_no_tracking_and_cumulative_momentum(rng):
    x = rng.standard_normal((6, 2, 3, 3))
    for kwargs in ({"affine": False}, {"track_running_stats": False}, {"momentum": None}):
        plain = nn.BatchNorm2d(2, **kwargs).double()
        sync = convert_sync_batchnorm(nn.BatchNorm2d(2, **kwargs).double(), LocalCommunicator())
        for _ in range(2):
            np.testing.assert_allclose(sync(mr.tensor(x)).data, plain(mr.tensor(x)).data, rtol=1e-12, atol=1e-12)
        for a, b in zip(sync.state_dict().values(), plain.state_dict().values()):
            np.testing.assert_allclose(a, b, rtol=1e-13)


def test_convert_keeps_tensors_keys_and_values(rng):
    model = mr.models.create("resnet20").double()
    params_before = list(model.parameters())
    keys_before = list(model.state_dict())
    x = mr.tensor(rng.standard_normal((4, 3, 32, 32)))
    expected = model(x).data
    for bn in model.modules():  # the forward above moved the running statistics: undo it for both runs
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
    converted = convert_sync_batchnorm(model, LocalCommunicator())
    assert converted is model
    kinds = {type(m).__name__ for m in model.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm2d" not in kinds
    assert list(model.state_dict()) == keys_before
    assert all(a is b for a, b in zip(model.parameters(), params_before))
    np.testing.assert_allclose(model(x).data, expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("size", [1, 3])
def test_forward_mode_equals_batchnorm_on_the_global_batch(rng, size):
    from minires.distributed.sync_batchnorm import SyncBatchNormFunction
    from minires.ops.norm import BatchNorm

    x, tx = rng.standard_normal((7, 3, 2, 2)) + 2, rng.standard_normal((7, 3, 2, 2))
    w, tw, b, tb = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)
    options = {"running_mean": None, "running_var": None, "momentum": 0.1, "eps": 1e-5}
    out = BatchNorm().forward(x, w, b, **options, training=True, relu=False)
    expected = BatchNorm().jvp((tx, tw, tb), (x, w, b), out, **options, training=True, relu=False)

    def part(comm):
        start, stop = part_bounds(len(x), comm.rank, comm.size)
        xs = x[start:stop]
        out = SyncBatchNormFunction().forward(xs, w, b, comm=comm, **options)
        return SyncBatchNormFunction().jvp((tx[start:stop], tw, tb), (xs, w, b), out, comm=comm, **options)

    np.testing.assert_allclose(np.concatenate(run_ranks(size, part)), expected, rtol=1e-12, atol=1e-12)
