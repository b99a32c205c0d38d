"""Module semantics: registration, iteration, state_dict, modes, dtypes, apply, repr."""

import copy
import pickle

import numpy as np
import pytest

import minires as mr
import minires.nn as nn


class Block(nn.Module):
    def __init__(self, channels=4):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(Block(), Block())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 10)
        self.register_buffer("scale", mr.ones(1))
        self.register_buffer("cache", mr.zeros(2), persistent=False)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(self.pool(x).flatten(1)) * self.scale


def test_parameter_is_a_tensor_requiring_grad():
    p = nn.Parameter(mr.zeros(2, 3))
    assert isinstance(p, mr.Tensor) and p.requires_grad and p.shape == (2, 3)
    assert repr(p).startswith("Parameter containing:\ntensor(")
    frozen = nn.Parameter(mr.zeros(2), requires_grad=False)
    assert not frozen.requires_grad
    # shares the array like torch.nn.Parameter shares storage
    t = mr.zeros(3)
    assert nn.Parameter(t).data is t.data


def test_registration_by_attribute_and_explicit_calls():
    m = nn.Module()
    m.w = nn.Parameter(mr.ones(2))
    m.child = nn.Linear(2, 2)
    m.register_buffer("stat", mr.zeros(2))
    m.register_parameter("maybe", None)
    m.add_module("other", nn.ReLU())
    m.plain = mr.zeros(1)  # a plain tensor attribute is neither parameter nor buffer
    assert list(m._parameters) == ["w", "maybe"]
    assert list(m._buffers) == ["stat"]
    assert list(m._modules) == ["child", "other"]
    assert m.maybe is None
    assert [n for n, _ in m.named_parameters()] == ["w", "child.weight", "child.bias"]
    # reassigning a parameter slot with a plain tensor is refused
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'w'"):
        m.w = mr.ones(2)
    m.w = nn.Parameter(mr.zeros(2))  # reassigning keeps the registration order (as PyTorch)
    assert list(m._parameters) == ["w", "maybe"]
    m.child = nn.Linear(2, 2)
    assert list(m._modules) == ["child", "other"]
    m.w = None
    assert "w" not in dict(m.named_parameters())
    del m.child
    assert not hasattr(m, "child")
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'nope'"):
        m.nope


def test_registration_errors():
    m = nn.Module()
    with pytest.raises(KeyError, match="contain"):
        m.register_buffer("a.b", mr.zeros(1))
    with pytest.raises(KeyError, match="empty"):
        m.register_parameter("", None)
    with pytest.raises(TypeError, match="buffer 'b'"):
        m.register_buffer("b", [1, 2])
    with pytest.raises(TypeError, match="parameter 'p'"):
        m.register_parameter("p", mr.zeros(1))
    m.x = 3
    with pytest.raises(KeyError, match="attribute 'x' already exists"):
        m.register_buffer("x", mr.zeros(1))
    with pytest.raises(TypeError, match="is not a Module"):
        m.add_module("y", 5)

    class Forgetful(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\) call"):
        Forgetful()
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        nn.Module()(mr.zeros(1))


def test_iteration_order_and_deduplication():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["stem.weight", "stem.bias", "blocks.0.conv.weight", "blocks.0.bn.weight",
                     "blocks.0.bn.bias", "blocks.1.conv.weight", "blocks.1.bn.weight", "blocks.1.bn.bias",
                     "fc.weight", "fc.bias"]
    assert [n for n, _ in net.named_buffers()][:4] == ["scale", "cache", "blocks.0.bn.running_mean",
                                                      "blocks.0.bn.running_var"]
    assert [n for n, _ in net.named_children()] == ["stem", "blocks", "pool", "fc"]
    assert [n for n, _ in net.named_modules()] == ["", "stem", "blocks", "blocks.0", "blocks.0.conv",
                                                   "blocks.0.bn", "blocks.0.relu", "blocks.1",
                                                   "blocks.1.conv", "blocks.1.bn", "blocks.1.relu",
                                                   "pool", "fc"]
    assert len(list(net.modules())) == 13 and len(list(net.children())) == 4
    assert len(list(net.parameters(recurse=False))) == 0
    # a shared module/parameter appears once
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, shared)
    assert len(list(seq.parameters())) == 2 and len(list(seq.modules())) == 2
    assert net.get_submodule("blocks.1.bn") is net.blocks[1].bn
    with pytest.raises(AttributeError, match="no submodule"):
        net.get_submodule("blocks.7")


def test_parameter_count_matches_torch():
    torch = pytest.importorskip("torch")
    tnet = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16),
                               torch.nn.Conv2d(16, 32, 3, groups=4), torch.nn.Linear(32, 10))
    mnet = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                         nn.Conv2d(16, 32, 3, groups=4), nn.Linear(32, 10))
    assert sum(p.numel() for p in mnet.parameters()) == sum(p.numel() for p in tnet.parameters())
    assert [(k, tuple(v.shape)) for k, v in mnet.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in tnet.state_dict().items()]


def test_state_dict_keys_order_and_values_match_torch():
    torch = pytest.importorskip("torch")
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    tnet = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4, 2))
    sd = net.state_dict()
    assert list(sd) == list(tnet.state_dict())
    nbt = sd["1.num_batches_tracked"]
    assert isinstance(nbt, np.ndarray) and nbt.shape == () and nbt.dtype == np.int64 and nbt == 0
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    # keep_vars gives the objects; persistent=False buffers are left out
    assert isinstance(net.state_dict(keep_vars=True)["0.weight"], nn.Parameter)
    assert "cache" not in Net().state_dict() and "scale" in Net().state_dict()
    # torch loads our state dict and we load torch's
    tnet.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    for k, v in tnet.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k])
    torch.manual_seed(3)
    tnet2 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2))
    tnet2[1].num_batches_tracked.fill_(7)
    result = net.load_state_dict({k: v.numpy() for k, v in tnet2.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(net[0].weight.numpy(), tnet2[0].weight.detach().numpy())
    assert int(net[1].num_batches_tracked.item()) == 7


def test_load_state_dict_copies_in_place_keeping_dtype():
    net = nn.Linear(3, 2)
    weight = net.weight
    array_before = net.weight.data
    new = {"weight": np.arange(6, dtype=np.float64).reshape(2, 3), "bias": mr.tensor([1.0, 2.0])}
    net.load_state_dict(new)
    assert net.weight is weight and net.weight.data is array_before  # same objects, copied into
    assert net.weight.dtype == np.float32
    np.testing.assert_array_equal(net.weight.numpy(), new["weight"].astype(np.float32))
    np.testing.assert_array_equal(net.bias.numpy(), [1.0, 2.0])
    new["weight"][0, 0] = 100  # no aliasing with the source
    assert net.weight.numpy()[0, 0] == 0
    # a Python int loads into the 0-d int64 counter
    bn = nn.BatchNorm2d(2)
    sd = {k: np.array(v) for k, v in bn.state_dict().items()}
    sd["num_batches_tracked"] = 5
    bn.load_state_dict(sd)
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.item() == 5


def test_load_state_dict_strict_errors_name_keys_and_shapes():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))
    sd = {k: np.array(v) for k, v in net.state_dict().items()}
    bad = dict(sd)
    bad["1.weight"] = np.zeros((5, 4), np.float32)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(bad)
    message = str(info.value)
    assert "size mismatch for 1.weight" in message and "(5, 4)" in message and "(2, 4)" in message
    assert isinstance(info.value, ValueError)  # StateDictError is both
    # a shape mismatch raises even when not strict (as PyTorch), and nothing was copied
    before = net[0].weight.numpy().copy()
    bad["0.weight"] = np.ones_like(sd["0.weight"])
    with pytest.raises(nn.StateDictError, match="size mismatch for 1.weight"):
        net.load_state_dict(bad, strict=False)
    np.testing.assert_array_equal(net[0].weight.numpy(), before)

    missing = dict(sd)
    del missing["0.bias"]
    missing["extra.weight"] = np.zeros(1)
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(missing)
    message = str(info.value)
    assert 'Missing key(s) in state_dict: "0.bias"' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in message
    assert "Sequential" in message
    result = net.load_state_dict(missing, strict=False)
    assert result.missing_keys == ["0.bias"] and result.unexpected_keys == ["extra.weight"]
    with pytest.raises(TypeError, match="mapping"):
        net.load_state_dict([1, 2])
    with pytest.raises(TypeError, match="non-numeric"):
        net.load_state_dict(dict(sd, **{"0.bias": np.array(["a"] * 4)}))


def test_train_eval_flags_recursive():
    net = Net()
    assert net.training and all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.blocks.train()
    assert not net.training and net.blocks[0].bn.training
    with pytest.raises(ValueError, match="boolean"):
        net.train("yes")


def test_eval_mode_uses_running_stats_and_train_updates_them():
    bn = nn.BatchNorm2d(3)
    x = mr.randn(4, 3, 5, 5) * 3 + 2
    bn(x)
    assert bn.num_batches_tracked.item() == 1
    assert np.all(bn.running_mean.numpy() != 0)
    bn.eval()
    before = bn.running_mean.numpy().copy()
    out = bn(x)
    np.testing.assert_array_equal(bn.running_mean.numpy(), before)
    assert bn.num_batches_tracked.item() == 1
    expected = (x.numpy() - before[None, :, None, None]) / np.sqrt(
        bn.running_var.numpy()[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_to_dtype_float_double_casts_floats_only():
    net = Net()
    params_before = list(net.parameters())
    net.double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.blocks[0].bn.running_var.dtype == np.float64
    assert net.blocks[0].bn.num_batches_tracked.dtype == np.int64
    assert all(a is b for a, b in zip(params_before, net.parameters()))  # same Parameter objects
    out = net(mr.randn(2, 3, 6, 6, dtype="float64"))
    assert out.dtype == np.float64
    net.to(np.float32)
    assert all(p.dtype == np.float32 for p in net.parameters())
    net.to("cpu", dtype="float64")
    assert net.fc.weight.dtype == np.float64
    net.float()
    assert net.fc.weight.dtype == np.float32
    with pytest.raises(TypeError, match="floating point"):
        net.to(np.int32)
    with pytest.raises(ValueError, match="unknown device"):
        net.to(device="tpu")


def test_to_casts_existing_gradients():
    net = nn.Linear(2, 2)
    net(mr.randn(3, 2)).sum().backward()
    net.double()
    assert net.weight.grad.dtype == np.float64


def test_zero_grad_requires_grad_and_apply():
    net = Net()
    net(mr.randn(2, 3, 4, 4)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    net.fc.requires_grad_(True)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    visited = []
    assert net.apply(lambda m: visited.append(type(m).__name__)) is net
    assert visited[-1] == "Net" and visited[0] == "Conv2d"  # children first, self last

    def init_linear(m):
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)

    net.apply(init_linear)
    assert not net.fc.weight.numpy().any()


def test_deepcopy_and_pickle_give_independent_modules():
    net = Net()
    twin = copy.deepcopy(net)
    assert twin.fc.weight is not net.fc.weight
    np.testing.assert_array_equal(twin.fc.weight.numpy(), net.fc.weight.numpy())
    twin.fc.weight.data[...] = 0
    assert net.fc.weight.numpy().any()
    assert isinstance(twin.fc.weight, nn.Parameter)
    again = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(again.stem.weight.numpy(), net.stem.weight.numpy())
    x = mr.randn(1, 3, 4, 4)
    net.eval(), again.eval()
    np.testing.assert_array_equal(net(x).numpy(), again(x).numpy())


def test_repr_matches_torch():
    torch = pytest.importorskip("torch")
    mine = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, (3, 1), stride=2, groups=4), nn.BatchNorm2d(32, momentum=None, affine=False),
        nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2), nn.Sigmoid(), nn.AdaptiveAvgPool2d((1, 1)),
        nn.Sequential(nn.Identity(), nn.Flatten()), nn.Linear(32, 10, bias=False), nn.ModuleList([nn.ReLU()]))
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False), torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(inplace=True), torch.nn.Conv2d(16, 32, (3, 1), stride=2, groups=4),
        torch.nn.BatchNorm2d(32, momentum=None, affine=False), torch.nn.MaxPool2d(3, 2, 1),
        torch.nn.AvgPool2d(2), torch.nn.Sigmoid(), torch.nn.AdaptiveAvgPool2d((1, 1)),
        torch.nn.Sequential(torch.nn.Identity(), torch.nn.Flatten()), torch.nn.Linear(32, 10, bias=False),
        torch.nn.ModuleList([torch.nn.ReLU()]))
    assert repr(mine) == repr(theirs)
    assert repr(nn.BatchNorm1d(5, bias=False)) == repr(torch.nn.BatchNorm1d(5, bias=False))
    for padding in ["same", "valid", (2, 1)]:
        assert repr(nn.Conv2d(2, 2, 5, padding=padding)) == repr(torch.nn.Conv2d(2, 2, 5, padding=padding))
    # ModuleList compresses runs of identical children, as PyTorch prints them
    mine = nn.ModuleList([nn.ReLU(), nn.ReLU(), nn.Sequential(nn.Linear(2, 2)), nn.ReLU()])
    theirs = torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(2, 2)),
                                  torch.nn.ReLU()])
    assert repr(mine) == repr(theirs)
    assert repr(nn.ModuleList()) == repr(torch.nn.ModuleList()) == "ModuleList()"
    assert repr(nn.ModuleDict({"a": nn.ReLU()})) == repr(torch.nn.ModuleDict({"a": torch.nn.ReLU()}))


def test_custom_extra_repr():
    class Scaled(nn.Module):
        def extra_repr(self):
            return "factor=2"

    assert repr(Scaled()) == "Scaled(factor=2)"
    m = Scaled()
    m.inner = nn.ReLU()
    assert repr(m) == "Scaled(\n  factor=2\n  (inner): ReLU()\n)"


def test_load_state_dict_accepts_a_missing_num_batches_tracked_as_pytorch_does():
    """State dicts from before PyTorch 0.4.1 have no num_batches_tracked; torch fills it in, so do we."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tnet = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    old_style = {k: v.numpy() for k, v in tnet.state_dict().items() if not k.endswith("num_batches_tracked")}
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net[1].num_batches_tracked.data[...] = 5
    result = net.load_state_dict(old_style)
    tresult = tnet.load_state_dict({k: torch.from_numpy(v) for k, v in old_style.items()})
    assert result.missing_keys == tresult.missing_keys == []
    assert int(net[1].num_batches_tracked.item()) == 5  # kept, as torch keeps its own value
    np.testing.assert_array_equal(net[1].running_var.numpy(), old_style["1.running_var"])
    # strict about everything else: a missing running_var, or num_batches_tracked of a non-BN buffer
    with pytest.raises(nn.StateDictError, match='Missing key.*"1.running_var"'):
        net.load_state_dict({k: v for k, v in old_style.items() if k != "1.running_var"})

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("num_batches_tracked", mr.zeros(1))

    with pytest.raises(nn.StateDictError, match='Missing key.*"num_batches_tracked"'):
        Counter().load_state_dict({})
    untracked = nn.BatchNorm2d(4, track_running_stats=False)
    assert "num_batches_tracked" not in untracked.state_dict()
