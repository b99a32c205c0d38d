"""Pickle-free checkpoints: exact round trips of nested state, atomic writes."""

import os
import zipfile

import numpy as np
import pytest

from minires.train import atomic_write, flatten_state, load_checkpoint, save_checkpoint, unflatten_state


def test_nested_state_roundtrip(tmp_path):
    rng_state = np.random.default_rng(5).bit_generator.state
    state = {
        "state": {0: {"momentum_buffer": np.arange(6, dtype=np.float32).reshape(2, 3)}, 3: {"momentum_buffer": None}},
        "param_groups": [{"lr": 0.1, "nesterov": True, "params": [0, 1, 2]}],
        "tuple": (1, "a", 2.5),
        "rng": rng_state,
        "legacy": np.random.get_state(),
        "scalar": np.float32(1.5),
        "nan": float("nan"),
        "big": 2**100,
    }
    arrays = {}
    desc = flatten_state(state, arrays, "s")
    save_checkpoint(tmp_path / "c.npz", arrays, {"s": desc})
    loaded_arrays, meta = load_checkpoint(tmp_path / "c.npz")
    back = unflatten_state(meta["s"], loaded_arrays)
    assert set(back["state"]) == {0, 3}  # int keys stay ints
    np.testing.assert_array_equal(back["state"][0]["momentum_buffer"], state["state"][0]["momentum_buffer"])
    assert back["state"][0]["momentum_buffer"].dtype == np.float32
    assert back["state"][3]["momentum_buffer"] is None
    assert back["param_groups"] == state["param_groups"]
    assert back["tuple"] == (1, "a", 2.5)
    assert back["rng"] == rng_state
    legacy = back["legacy"]
    assert legacy[0] == "MT19937" and np.array_equal(legacy[1], state["legacy"][1]) and legacy[2:] == state["legacy"][2:]
    np.random.set_state(legacy)
    assert back["scalar"] == np.float32(1.5) and back["scalar"].dtype == np.float32
    assert np.isnan(back["nan"]) and back["big"] == 2**100
    # no pickle anywhere: the file loads with allow_pickle=False and holds only plain arrays
    with zipfile.ZipFile(tmp_path / "c.npz") as z:
        assert all(n.endswith(".npy") for n in z.namelist())


def test_flatten_refuses_objects():
    with pytest.raises(TypeError, match="cannot store a object"):
        flatten_state({"x": object()}, {}, "p")


def test_atomic_write_failure_keeps_old_file(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def failing(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_load_errors(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a minires checkpoint"):
        load_checkpoint(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.npz", {"__meta__": np.zeros(1)}, {})
