"""minires.io: .npz and .safetensors round trips, the safetensors parser, and error cases."""

import json
import struct

import numpy as np
import pytest

import minires as mr
import minires.io as mio
from minires.io import CheckpointError


def sample_state(rng):
    return {
        "conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bn1.running_var": rng.random(4).astype(np.float64),
        "bn1.num_batches_tracked": np.array(7, dtype=np.int64),
        "half": rng.standard_normal(5).astype(np.float16),
        "mask": np.array([True, False, True]),
        "bytes": np.arange(6, dtype=np.uint8).reshape(2, 3),
        "i32": np.array([-1, 2**31 - 1], dtype=np.int32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "file": np.ones(2, dtype=np.float32),  # would clash with np.savez's own argument name
        "allow_pickle": np.ones(1, dtype=np.float32),
    }


def assert_same_state(got, expected):
    assert list(got) == list(expected) or set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_round_trip_preserves_names_dtypes_and_values(tmp_path, rng, ext):
    state = sample_state(rng)
    path = tmp_path / f"w{ext}"
    mio.save_state_dict(state, path)
    loaded = mio.load_state_dict(path)
    assert set(loaded) == set(state)
    assert_same_state(loaded, state)
    if ext == ".npz":  # readable by NumPy itself without pickle
        with np.load(path, allow_pickle=False) as archive:
            assert sorted(archive.files) == sorted(state)


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_save_accepts_minires_tensors_and_noncontiguous_arrays(tmp_path, rng, ext):
    base = rng.standard_normal((3, 4)).astype(np.float32)
    state = {"t": mr.tensor(base), "transposed": base.T, "strided": base[:, ::2]}
    mio.save_state_dict(state, tmp_path / f"w{ext}")
    loaded = mio.load_state_dict(tmp_path / f"w{ext}")
    np.testing.assert_array_equal(loaded["t"], base)
    np.testing.assert_array_equal(loaded["transposed"], base.T)
    np.testing.assert_array_equal(loaded["strided"], base[:, ::2])


def test_safetensors_layout_header_padding_alignment_and_metadata(tmp_path, rng):
    state = sample_state(rng)
    path = tmp_path / "w.safetensors"
    mio.save_state_dict(state, path, metadata={"arch": "resnet20"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header.pop("__metadata__") == {"arch": "resnet20"}
    assert header["conv1.weight"] == {"dtype": "F32", "shape": [4, 3, 3, 3],
                                      "data_offsets": header["conv1.weight"]["data_offsets"]}
    spans = sorted(tuple(e["data_offsets"]) for e in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(raw) - 8 - n  # contiguous buffer, no holes
    for (_, end), (begin, _) in zip(spans, spans[1:]):
        assert end == begin
    for name, entry in header.items():  # every tensor starts at a multiple of its item size
        assert (8 + n + entry["data_offsets"][0]) % state[name].itemsize == 0, name
    arrays, meta = mio.read_safetensors(path, with_metadata=True)
    assert meta == {"arch": "resnet20"}
    assert_same_state(arrays, state)


def write_reference_safetensors(path, tensors, pad=False):
    """An independent encoder: entries in the given order, header unpadded unless asked."""
    header, blobs, offset = {}, [], 0
    for name, (tag, array) in tensors.items():
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def test_safetensors_reader_against_independent_encoder_including_bf16(tmp_path, rng):
    values = rng.standard_normal(6).astype(np.float32)
    bf16_bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # truncate to bfloat16
    u64 = np.array([0, 2**64 - 1], dtype=np.uint64)
    f64 = rng.standard_normal((2, 2))
    path = tmp_path / "ref.safetensors"
    write_reference_safetensors(path, {"z_first": ("F64", f64), "bf": ("BF16", bf16_bits.reshape(2, 3)),
                                       "u": ("U64", u64)})
    loaded = mio.load_state_dict(path)
    assert list(loaded) == ["z_first", "bf", "u"]
    np.testing.assert_array_equal(loaded["z_first"], f64)
    np.testing.assert_array_equal(loaded["u"], u64)
    expected_bf = (bf16_bits.astype(np.uint32) << 16).view(np.float32).reshape(2, 3)
    assert loaded["bf"].dtype == np.float32
    np.testing.assert_array_equal(loaded["bf"], expected_bf)
    np.testing.assert_allclose(loaded["bf"].ravel(), values, rtol=2**-7)


def _valid_safetensors(tmp_path):
    path = tmp_path / "ok.safetensors"
    write_reference_safetensors(path, {"a": ("F32", np.arange(4, dtype=np.float32))})
    return path, path.read_bytes()


@pytest.mark.parametrize("corrupt, message", [
    (lambda raw: raw[:5], "too short"),
    (lambda raw: struct.pack("<Q", 10**6) + raw[8:], "header claims"),
    (lambda raw: raw[:-4], "outside"),
    (lambda raw: raw.replace(b'"F32"', b'"F99"'), "unsupported dtype"),
    (lambda raw: raw.replace(b'[4]', b'[5]'), "needs 20 bytes"),
    (lambda raw: raw.replace(b'{"a"', b'["a"').replace(b'}}', b'}]'), "JSON"),
    (lambda raw: raw.replace(b'"shape"', b'"shapf"'), "needs 'dtype'"),
])
def test_corrupt_safetensors_raise_checkpoint_error(tmp_path, corrupt, message):
    path, raw = _valid_safetensors(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(corrupt(raw))
    with pytest.raises(CheckpointError, match=message):
        mio.load_state_dict(bad)


def test_corrupt_or_pickled_npz_raise_checkpoint_error(tmp_path):
    not_zip = tmp_path / "junk.npz"
    not_zip.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(CheckpointError, match="junk.npz"):
        mio.load_state_dict(not_zip)
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="without pickle"):
        mio.load_state_dict(pickled)
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(CheckpointError, match="single .npy"):
        mio.load_state_dict(single)


def test_missing_file_unknown_content_and_writing_extensions(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        mio.load_state_dict(tmp_path / "nope.npz")
    (tmp_path / "w.h5").write_bytes(b"")  # the bytes decide, not the extension: this is nothing known
    with pytest.raises(CheckpointError, match=r"w\.h5' is not a weight file .* first bytes are b''.*PyTorch.*safetensors"):
        mio.load_state_dict(tmp_path / "w.h5")
    with pytest.raises(ValueError, match=r"unknown extension '\.pth'.*\.npz, \.safetensors"):
        mio.save_state_dict({"a": np.ones(1)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="none"):
        mio.save_state_dict({"a": np.ones(1)}, tmp_path / "noext")


def test_save_rejects_bad_keys_values_and_metadata(tmp_path):
    with pytest.raises(TypeError, match="keys must be str"):
        mio.save_state_dict({1: np.ones(1)}, tmp_path / "w.npz")
    with pytest.raises(TypeError, match="dtype object"):
        mio.save_state_dict({"a": np.array([None])}, tmp_path / "w.npz")
    with pytest.raises(TypeError, match="complex64"):
        mio.save_state_dict({"a": np.ones(2, dtype=np.complex64)}, tmp_path / "w.safetensors")
    with pytest.raises(TypeError, match="dict of arrays or a Module"):
        mio.save_state_dict([np.ones(1)], tmp_path / "w.npz")
    with pytest.raises(ValueError, match="metadata"):
        mio.save_state_dict({"a": np.ones(1)}, tmp_path / "w.npz", metadata={"k": "v"})
    with pytest.raises(TypeError, match="str to str"):
        mio.save_state_dict({"a": np.ones(1)}, tmp_path / "w.safetensors", metadata={"k": 1})
    with pytest.raises(ValueError, match="only applies to PyTorch"):
        mio.save_state_dict({"a": np.ones(1)}, tmp_path / "w.npz")
        mio.load_state_dict(tmp_path / "w.npz", key="model")
