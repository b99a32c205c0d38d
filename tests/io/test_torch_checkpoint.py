"""minires.io reading PyTorch checkpoints: without torch, and refusing crafted pickles."""

import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import minires.io as mio
from minires.io import CheckpointError, UnsafeCheckpointError

from .checkpoint_files import global_op as _global
from .checkpoint_files import handmade_tensor_pickle, write_zip_checkpoint
from .checkpoint_files import unicode_op as _unicode
from .checkpoint_files import write_legacy_checkpoint

CALLS = []  # a harmless, importable global: if it were ever resolved and called, this would fill


def record_call(*args):
    CALLS.append(args)
    return 0


class Evil:
    """Pickles as a call to ``os.system`` (the classic malicious checkpoint)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CallsRecorder:
    def __reduce__(self):
        return (record_call, ("ran",))


def test_handmade_checkpoint_loads_without_torch(tmp_path):
    data = np.arange(6, dtype="<f4")
    path = tmp_path / "hand.pth"
    write_zip_checkpoint(path, handmade_tensor_pickle(numel=6, size=(2, 2), stride=(1, 2), offset=1),
                         {"data/0": data.tobytes(), "byteorder": "little"})
    state = mio.load_state_dict(path)
    expected = np.lib.stride_tricks.as_strided(data[1:], (2, 2), (4, 8))
    np.testing.assert_array_equal(state["w"], expected)
    assert state["w"].flags.owndata or state["w"].base is None or state["w"].flags.writeable


def test_big_endian_byteorder_record_is_honoured(tmp_path):
    data = np.arange(4, dtype=np.float32) + 0.5
    path = tmp_path / "big.pth"
    write_zip_checkpoint(path, handmade_tensor_pickle(), {"data/0": data.astype(">f4").tobytes(), "byteorder": "big"})
    loaded = mio.load_state_dict(path)["w"]
    assert loaded.dtype == np.float32 and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, data.reshape(2, 2))


@pytest.mark.parametrize("writer", [write_zip_checkpoint, write_legacy_checkpoint])
@pytest.mark.parametrize("payload", ["os.system", "nested", "recorder"])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, writer, payload):
    marker = tmp_path / "pwned"
    obj = {"os.system": Evil(marker), "nested": collections.OrderedDict(w=[1, Evil(marker)]),
           "recorder": {"w": CallsRecorder()}}[payload]
    path = tmp_path / "evil.pth"
    writer(path, pickle.dumps(obj, protocol=2))
    CALLS.clear()
    expected = "record_call" if payload == "recorder" else r"'(posix|nt|os)\.system'"
    with pytest.raises(UnsafeCheckpointError, match=rf"refusing to load .*evil\.pth.*{expected}.*nothing was"):
        mio.load_state_dict(path)
    assert not marker.exists()
    assert CALLS == []


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"), ("builtins", "getattr"), ("torch", "load"), ("torch._utils", "_rebuild_qtensor"),
    ("numpy.core.multiarray", "_reconstruct"), ("subprocess", "Popen"), ("collections", "namedtuple"),
])
def test_any_global_outside_the_allow_list_is_refused(tmp_path, module, name):
    path = tmp_path / "g.pth"
    write_zip_checkpoint(path, pickle.PROTO + b"\x02" + _global(module, name) + pickle.STOP)
    with pytest.raises(UnsafeCheckpointError, match=rf"'{module}\.{name}'"):
        mio.load_state_dict(path)
    assert isinstance(UnsafeCheckpointError("x"), pickle.UnpicklingError)


def test_setting_state_on_a_rebuilt_tensor_is_refused(tmp_path):
    path = tmp_path / "build.pth"
    write_zip_checkpoint(path, handmade_tensor_pickle(build_state=True),
                         {"data/0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(UnsafeCheckpointError, match="set state"):
        mio.load_state_dict(path)


def test_pickled_module_source_is_refused(tmp_path):
    pid = pickle.MARK + _unicode("module") + _unicode("x") + _unicode("y") + _unicode("z") + pickle.TUPLE
    path = tmp_path / "m.pth"
    write_legacy_checkpoint(path, pickle.PROTO + b"\x02" + pid + pickle.BINPERSID + pickle.STOP)
    with pytest.raises(UnsafeCheckpointError, match="whole module"):
        mio.load_state_dict(path)


@pytest.mark.parametrize("case, message", [
    ("random", "bad magic|corrupt"),
    ("no_pickle", "expected one '<name>/data.pkl'"),
    ("missing_record", "storage record 'archive/data/0' is missing"),
    ("short_record", "has 8 bytes, expected 4 x 4"),
    ("past_end", "reads past its storage"),
    ("truncated_zip", "corrupt|not a torch.save|bad magic"),
    ("tar", "tar checkpoint format"),
])
def test_corrupt_torch_checkpoints_raise_checkpoint_error(tmp_path, case, message):
    path = tmp_path / "c.pth"
    good = handmade_tensor_pickle()
    if case == "random":
        path.write_bytes(os.urandom(64))
    elif case == "no_pickle":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("something/else.txt", "hi")
    elif case == "missing_record":
        write_zip_checkpoint(path, good)
    elif case == "short_record":
        write_zip_checkpoint(path, good, {"data/0": np.zeros(2, "<f4").tobytes()})
    elif case == "past_end":
        write_zip_checkpoint(path, handmade_tensor_pickle(offset=1), {"data/0": np.zeros(4, "<f4").tobytes()})
    elif case == "truncated_zip":
        write_zip_checkpoint(path, good, {"data/0": np.zeros(4, "<f4").tobytes()})
        path.write_bytes(path.read_bytes()[:40])
    elif case == "tar":
        raw = bytearray(1024)
        raw[257:262] = b"ustar"
        path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=message):
        mio.load_state_dict(path)


# ----------------------------------------------------------------------------------------
# real torch.save files (need torch to *write* them; reading happens with torch hidden)

HIDDEN_TORCH_LOADER = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None          # any `import torch` now raises ImportError
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit("torch is importable in the hidden-torch process")
    import numpy as np
    import minires.io as mio
    source, target = sys.argv[1], sys.argv[2]
    state = mio.load_state_dict(source)
    mio.save_state_dict(state, target)
    leaked = sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "torch" and v is not None)
    print("TORCH_MODULES", leaked)
""")


def torch_reference_state(torch):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 5))
    net.train()
    net(torch.randn(2, 3, 6, 6))  # move running stats and num_batches_tracked
    return net.state_dict()


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_loads_identically_where_torch_cannot_be_imported(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    state = torch_reference_state(torch)
    path = tmp_path / "net.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    out = tmp_path / "via_minires.npz"
    result = subprocess.run([sys.executable, "-c", HIDDEN_TORCH_LOADER, str(path), str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TORCH_MODULES []" in result.stdout
    loaded = mio.load_state_dict(out)
    assert list(loaded) == list(state)
    for name, tensor in state.items():
        expected = tensor.numpy()
        assert loaded[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(loaded[name], expected, err_msg=name)
    assert loaded["1.num_batches_tracked"] == 1


@pytest.mark.torch
def test_torch_views_shared_storage_dtypes_and_nesting(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {
        "state_dict": collections.OrderedDict(
            t=base.t(), row=base[2], cols=base[:, 1::2], same=base,
            bf=torch.linspace(-2, 2, 7, dtype=torch.bfloat16), half=torch.randn(3).half(),
            long=torch.tensor([2**40, -3]), flag=torch.tensor([True, False]), u16=torch.arange(4).to(torch.uint16),
            p=torch.nn.Parameter(torch.ones(2, 2)), scalar=torch.tensor(3.5), empty=torch.zeros(0, 2)),
        "epoch": 3, "note": "hello",
    }
    for zip_format in (True, False):
        path = tmp_path / f"n{zip_format}.pt"
        torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
        raw = mio.read_torch_checkpoint(path)
        assert raw["epoch"] == 3 and raw["note"] == "hello"
        state = mio.load_state_dict(path)  # unwrapped from "state_dict"
        assert list(state) == list(obj["state_dict"])
        assert list(mio.load_state_dict(path, key="state_dict")) == list(state)
        for name, tensor in obj["state_dict"].items():
            expected = tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().numpy()
            assert state[name].dtype == expected.dtype, name
            assert state[name].shape == expected.shape, name
            np.testing.assert_array_equal(state[name], expected, err_msg=name)
        state["same"][0, 0] = -1  # copies, not views of one shared buffer
        assert state["t"][0, 0] == 0


@pytest.mark.torch
def test_non_state_dict_checkpoints_need_a_key(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "two.pth"
    torch.save({"a": {"w": torch.ones(1)}, "b": {"w": torch.zeros(1)}, "step": 1}, path)
    with pytest.raises(CheckpointError, match=r"top-level keys \['a', 'b', 'step'\].*key="):
        mio.load_state_dict(path)
    np.testing.assert_array_equal(mio.load_state_dict(path, key="b")["w"], np.zeros(1, np.float32))
    with pytest.raises(KeyError, match="no entry 'c'"):
        mio.load_state_dict(path, key="c")
    torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        mio.load_state_dict(path)


def test_cyclic_containers_raise_a_clear_error(tmp_path):
    cyclic = []
    cyclic.append(cyclic)
    path = tmp_path / "cycle.pth"
    write_zip_checkpoint(path, pickle.dumps({"w": cyclic}, protocol=2))
    with pytest.raises(CheckpointError, match="not a flat"):
        mio.load_state_dict(path)  # refused before anything walks the cycle
    with pytest.raises(CheckpointError, match="cycle.pth': object graph is cyclic"):
        mio.read_torch_checkpoint(path)


def test_negative_sizes_are_rejected(tmp_path):
    path = tmp_path / "neg.pth"
    write_zip_checkpoint(path, handmade_tensor_pickle(size=(0, -1), stride=(1, 1)),
                         {"data/0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(CheckpointError, match=r"invalid tensor size \(0, -1\): negative"):
        mio.load_state_dict(path)


def test_restricted_unpickler_is_usable_directly():
    data = pickle.dumps(collections.OrderedDict(a=1, b=[2.0, "x"]), protocol=2)
    got = mio.RestrictedUnpickler(io.BytesIO(data), "memory").load()
    assert got == collections.OrderedDict(a=1, b=[2.0, "x"])
    with pytest.raises(UnsafeCheckpointError):
        mio.RestrictedUnpickler(io.BytesIO(pickle.dumps(Evil("/nonexistent/x"))), "memory").load()
