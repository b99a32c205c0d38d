"""Layers: torch parity of forward/backward with shared weights, BatchNorm state, containers, errors."""

import numpy as np
import pytest

import minires as mr
import minires.nn as nn

torch = pytest.importorskip("torch")


def _copy_weights(mine, theirs):
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in mine.state_dict().items()})


def _check_parity(mine, theirs, x, rng, rtol=1e-10, atol=1e-12, steps=1):
    """Forward, input gradient and every parameter gradient in float64, ``steps`` times."""
    mine.double()
    theirs.double()
    _copy_weights(mine, theirs)
    for _ in range(steps):
        xm, xt = mr.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        out_m, out_t = mine(xm), theirs(xt)
        np.testing.assert_allclose(out_m.numpy(), out_t.detach().numpy(), rtol=rtol, atol=atol)
        g = rng.standard_normal(out_t.shape)
        out_m.backward(g)
        out_t.backward(torch.from_numpy(g))
        np.testing.assert_allclose(xm.grad, xt.grad.numpy(), rtol=rtol, atol=atol)
        tparams = dict(theirs.named_parameters())
        for name, p in mine.named_parameters():
            np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), rtol=rtol, atol=atol, err_msg=name)
        for name, buf in theirs.state_dict().items():
            np.testing.assert_allclose(mine.state_dict()[name], buf.numpy(), rtol=rtol, atol=atol, err_msg=name)
        mine.zero_grad()
        theirs.zero_grad()


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 1), stride=2, padding=(1, 0), groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4, bias=False),
    dict(in_channels=3, out_channels=2, kernel_size=5, padding="same"),
])
def test_conv2d_matches_torch(kwargs, rng):
    x = rng.standard_normal((2, kwargs["in_channels"], 7, 6))
    _check_parity(nn.Conv2d(**kwargs), torch.nn.Conv2d(**kwargs), x, rng)


def test_linear_flatten_identity_activations_pooling_match_torch(rng):
    mine = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2), nn.ReLU(), nn.Identity(), nn.Sigmoid(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5), nn.Linear(5, 2, bias=False))
    theirs = torch.nn.Sequential(torch.nn.MaxPool2d(3, 2, 1), torch.nn.AvgPool2d(2), torch.nn.ReLU(),
                                 torch.nn.Identity(), torch.nn.Sigmoid(), torch.nn.AdaptiveAvgPool2d(1),
                                 torch.nn.Flatten(), torch.nn.Linear(3, 5), torch.nn.Linear(5, 2, bias=False))
    _check_parity(mine, theirs, rng.standard_normal((2, 3, 9, 8)), rng)


def test_linear_on_3d_input_matches_torch(rng):
    _check_parity(nn.Linear(4, 3), torch.nn.Linear(4, 3), rng.standard_normal((2, 5, 4)), rng)


@pytest.mark.parametrize("kwargs", [dict(), dict(momentum=None), dict(affine=False), dict(momentum=0.3, eps=1e-3),
                                    dict(track_running_stats=False), dict(bias=False)])
def test_batchnorm2d_train_steps_and_eval_match_torch(kwargs, rng):
    mine, theirs = nn.BatchNorm2d(3, **kwargs), torch.nn.BatchNorm2d(3, **kwargs)
    if mine.weight is not None:  # non-trivial affine parameters
        mine.weight.data[...] = rng.uniform(0.5, 1.5, 3)
    if mine.bias is not None:
        mine.bias.data[...] = rng.standard_normal(3)
    x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
    _check_parity(mine, theirs, x, rng, steps=3)  # running stats and num_batches_tracked after 3 steps
    if kwargs.get("track_running_stats", True):
        assert mine.num_batches_tracked.item() == 3 and mine.num_batches_tracked.dtype == np.int64
    mine.eval()
    theirs.eval()
    _check_parity(mine, theirs, x, rng)


def test_batchnorm1d_matches_torch(rng):
    _check_parity(nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4), rng.standard_normal((6, 4)), rng, steps=2)
    _check_parity(nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4), rng.standard_normal((3, 4, 5)), rng, steps=2)


def test_batchnorm_buffers_and_errors():
    bn = nn.BatchNorm2d(3)
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    np.testing.assert_array_equal(bn.running_var.numpy(), np.ones(3))
    assert bn.running_mean.dtype == np.float32 and not bn.running_mean.requires_grad
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input"):
        bn(mr.randn(3, 4, 4))
    with pytest.raises(ValueError, match="expected 3 channels"):
        bn(mr.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        nn.BatchNorm1d(3)(mr.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm2d(0)
    nostats = nn.BatchNorm2d(3, track_running_stats=False)
    assert nostats.running_mean is None and list(nostats.state_dict()) == ["weight", "bias"]


def test_default_init_matches_torch_bounds_and_statistics():
    mr.manual_seed(0)
    conv = nn.Conv2d(64, 32, 3)
    tconv = torch.nn.Conv2d(64, 32, 3)
    fan_in = 64 * 9
    bound = 1 / np.sqrt(fan_in)
    for mine, theirs in [(conv.weight, tconv.weight), (conv.bias, tconv.bias)]:
        w, tw = mine.numpy(), theirs.detach().numpy()
        assert np.abs(w).max() <= bound and np.abs(tw).max() <= bound
        # both near-uniform on [-bound, bound]: max close to bound, std close to bound/sqrt(3)
        if w.size > 1000:
            assert np.abs(w).max() > 0.99 * bound
            np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.03)
            np.testing.assert_allclose(w.std(), tw.std(), rtol=0.05)
            assert abs(w.mean()) < 0.02 * bound * 10
    lin, tlin = nn.Linear(200, 100), torch.nn.Linear(200, 100)
    bound = 1 / np.sqrt(200)
    assert np.abs(lin.weight.numpy()).max() <= bound and np.abs(lin.bias.numpy()).max() <= bound
    np.testing.assert_allclose(lin.weight.numpy().std(), tlin.weight.detach().numpy().std(), rtol=0.05)
    # grouped convolution: fan_in counts the channels of one group
    g = nn.Conv2d(8, 8, 3, groups=4)
    assert np.abs(g.weight.numpy()).max() <= 1 / np.sqrt(2 * 9)
    assert np.abs(g.weight.numpy()).max() > 0.9 / np.sqrt(2 * 9)
    bn = nn.BatchNorm2d(4)
    assert (bn.weight.numpy() == 1).all() and (bn.bias.numpy() == 0).all()


def test_init_is_seeded_and_dtype_device_arguments():
    mr.manual_seed(5)
    a = nn.Conv2d(3, 4, 3).weight.numpy()
    mr.manual_seed(5)
    b = nn.Conv2d(3, 4, 3).weight.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nn.Conv2d(3, 4, 3).weight.numpy())
    c = nn.Conv2d(3, 4, 3, dtype=np.float64, device="cpu")
    assert c.weight.dtype == np.float64 and c.bias.dtype == np.float64 and c.weight.device == "cpu"
    assert nn.BatchNorm2d(2, dtype="float64").running_var.dtype == np.float64


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="dilation"):
        nn.Conv2d(3, 4, 3, 1, 0, 2)
    with pytest.raises(ValueError, match="same"):
        nn.Conv2d(3, 4, 2, padding="same")
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2d(3, 4, 3, padding="full")
    with pytest.raises(TypeError, match="kernel_size"):
        nn.Conv2d(3, 4, 2.5)
    with pytest.raises(ValueError, match="in_channels"):
        nn.Conv2d(0, 4, 3)
    with pytest.raises(ValueError, match="ceil_mode"):
        nn.MaxPool2d(2, ceil_mode=True)
    with pytest.raises(ValueError, match="count_include_pad"):
        nn.AvgPool2d(2, count_include_pad=False)
    with pytest.raises(ValueError, match="4-D"):
        nn.MaxPool2d(2)(mr.randn(2, 4, 4))
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(-1, 2)
    # errors from the functional layer come through with their messages
    with pytest.raises(ValueError):
        nn.Conv2d(3, 4, 3)(mr.randn(1, 2, 8, 8))
    # PyTorch's positional order: (in, out, kernel, stride, padding, dilation, groups, bias)
    conv = nn.Conv2d(4, 4, 3, 2, 1, 1, 2, False)
    assert conv.stride == (2, 2) and conv.padding == (1, 1) and conv.groups == 2 and conv.bias is None


def test_relu_inplace_flag_is_accepted():
    x = mr.tensor([-1.0, 2.0])
    out = nn.ReLU(inplace=True)(x)
    np.testing.assert_array_equal(out.numpy(), [0.0, 2.0])


def test_sequential_indexing_len_iteration_append():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[2]
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == layers[1:]
    assert [n for n, _ in sub.named_children()] == ["1", "2"]  # slices keep names, as PyTorch
    seq.append(nn.Sigmoid())
    assert len(seq) == 4 and [n for n, _ in seq.named_children()] == ["0", "1", "2", "3"]
    seq[1] = nn.Identity()
    assert isinstance(seq[1], nn.Identity)
    del seq[1]
    assert [type(m).__name__ for m in seq] == ["Linear", "Linear", "Sigmoid"]
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    seq.insert(1, nn.ReLU())
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear", "Sigmoid"]
    out = seq(mr.randn(5, 2))
    assert out.shape == (5, 1) and (out.numpy() > 0).all()
    with pytest.raises(IndexError, match="out of range"):
        seq[10]
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 1, 1)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["conv.weight", "conv.bias"] and named.act is named[1]


def test_modulelist_and_moduledict():
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(ml) == 3 and len(list(ml.parameters())) == 6
    ml.append(nn.ReLU())
    ml.extend([nn.ReLU()])
    assert len(ml) == 5 and isinstance(ml[-1], nn.ReLU)
    assert list(ml.state_dict())[:2] == ["0.weight", "0.bias"]
    del ml[0]
    assert [n for n, _ in ml.named_children()] == ["0", "1", "2", "3"]
    ml.insert(0, nn.Identity())
    assert isinstance(ml[0], nn.Identity) and len(ml) == 5
    md = nn.ModuleDict({"a": nn.Linear(1, 1)})
    md["b"] = nn.ReLU()
    assert list(md.keys()) == ["a", "b"] and "a" in md and len(md) == 2
    assert list(md.state_dict()) == ["a.weight", "a.bias"]
