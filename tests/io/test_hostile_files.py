"""Hostile and broken weight files: each refused with a CheckpointError naming the file, cheaply.

Every file here is crafted by the test (no torch). "Cheaply" is measured
(``assert_refused_cheaply``: under 100 MB traced memory and 2 s of CPU); the unbounded
readers took gigabytes and tens of seconds on several of them.
"""

import json
import pickle
import struct
import zipfile

import numpy as np
import pytest

import minires.io as mio
from minires.io import CheckpointError, ReadLimits, ResourceLimitError

from ..resource_bounds import assert_refused_cheaply
from .checkpoint_files import (global_op, handmade_tensor_pickle, int_tuple_op, legacy_header, unicode_op,
                               write_legacy_checkpoint, write_zip_checkpoint)

ZEROS_MB = 64  # inflated size of the bombs: over the 32 MiB floor of the default limit


def _billion_laughs(levels=30, width=10):
    """Nested lists sharing one memo entry per level: width ** levels leaves in under a kilobyte."""
    inner = []
    for _ in range(levels):
        inner = [inner] * width
    return pickle.dumps({"w": inner}, protocol=2)


def _deep_nesting(depth=20_000):  # deeper than Python's recursion limit
    return (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + unicode_op("w") + pickle.EMPTY_LIST * depth
            + pickle.APPEND * (depth - 1) + pickle.SETITEM + pickle.STOP)


def _deflated_zeros(archive, name, nbytes, head=b""):
    with archive.open(name, "w") as member:
        member.write(head)
        chunk = bytes(1 << 20)
        for _ in range(nbytes // len(chunk)):
            member.write(chunk)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """A torch zip whose storage record and an .npz whose member inflate to 64 MiB of zeros (each ~300 KB)."""
    root = tmp_path_factory.mktemp("bombs")
    numel = ZEROS_MB * 2**20 // 4
    torch_bomb = root / "bomb.pth"
    with zipfile.ZipFile(torch_bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("archive/data.pkl", handmade_tensor_pickle(numel=numel, size=(numel,), stride=(1,)))
        _deflated_zeros(z, "archive/data/0", ZEROS_MB << 20)
    npz_bomb = root / "bomb.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(0, np.float32))
    header["shape"] = (numel,)
    buffer = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(npz_bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        _deflated_zeros(z, "w.npy", ZEROS_MB << 20, head=buffer.getvalue())
    return torch_bomb, npz_bomb


def test_bombs_are_small_files_refused_before_inflating(bombs):
    for path in bombs:
        assert path.stat().st_size < 2**20
        assert_refused_cheaply(lambda: mio.load_state_dict(path), ResourceLimitError,
                               rf"{path.name}'.*needs 67,108,\d\d\d bytes.*over the limit.*ReadLimits\(max_bytes")
    # a caller who means it can raise the cap
    state = mio.load_state_dict(bombs[1], limits=ReadLimits(max_bytes=300 * 2**20))
    assert state["w"].shape == (ZEROS_MB * 2**20 // 4,) and not state["w"].any()


def _lying_record(path, stated):
    """A deflated 64 MiB record whose zip headers state ``stated`` bytes (patched after writing)."""
    numel = stated // 4
    write_zip_checkpoint(path, handmade_tensor_pickle(numel=numel, size=(numel,), stride=(1,)))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        _deflated_zeros(z, "archive/data/0", ZEROS_MB << 20)
    with zipfile.ZipFile(path) as z:
        local = z.getinfo("archive/data/0").header_offset
    raw = bytearray(path.read_bytes())
    central = raw.rindex(b"archive/data/0") - 46  # the central directory entry precedes the name
    for at in (local + 22, central + 24):  # the uncompressed-size fields
        raw[at:at + 4] = struct.pack("<I", stated)
    path.write_bytes(bytes(raw))


def test_a_record_that_inflates_past_its_stated_size_is_caught_by_its_crc(tmp_path):
    path = tmp_path / "liar.pth"
    _lying_record(path, 4096)
    assert_refused_cheaply(lambda: mio.load_state_dict(path), CheckpointError, r"liar\.pth'.*corrupt record.*CRC")


@pytest.mark.parametrize("name, make, message", [
    ("laughs.pth", lambda p: write_zip_checkpoint(p, _billion_laughs()), "not a flat"),
    ("laughs_legacy.pth", lambda p: write_legacy_checkpoint(p, _billion_laughs()), "not a flat"),
    ("deep.pth", lambda p: write_zip_checkpoint(p, _deep_nesting()), "not a flat"),
    ("memo.pth", lambda p: write_zip_checkpoint(p, b"\x80\x02]r\x00\x00\x00\x40."), r"memo index is 1,073,741,824"),
    ("memo_get.pth", lambda p: write_zip_checkpoint(p, b"\x80\x02]j\xff\xff\xff\x7f."), "memo index"),
    ("stride0.pth", lambda p: write_zip_checkpoint(p, handmade_tensor_pickle(numel=1, size=(20000, 20000),
                                                                            stride=(0, 0)),
                                                 {"data/0": bytes(4)}), "view larger than its storage"),
    ("huge.pth", lambda p: write_zip_checkpoint(p, handmade_tensor_pickle(numel=4, size=(2**70,), stride=(1,)),
                                              {"data/0": bytes(16)}), "past 2\\*\\*63"),
    ("huge_numel.pth", lambda p: write_zip_checkpoint(p, handmade_tensor_pickle(numel=2**62, size=(2,), stride=(1,)),
                                                    {"data/0": bytes(16)}), "storage '0' has 16 bytes, expected"),
    ("bool_size.pth", lambda p: write_zip_checkpoint(p, handmade_tensor_pickle().replace(
        int_tuple_op((2, 2)), pickle.MARK + pickle.NEWTRUE + pickle.NEWTRUE + pickle.TUPLE), {"data/0": bytes(16)}),
     "invalid tensor size"),
])
def test_hostile_torch_checkpoints_are_refused_cheaply(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    assert path.stat().st_size < 2**20
    assert_refused_cheaply(lambda: mio.load_state_dict(path), CheckpointError, rf"{name}'.*{message}")
    assert_refused_cheaply(lambda: mio.inspect_weights(path), CheckpointError, rf"{name}'.*{message}")


def test_whole_checkpoint_reads_share_what_the_pickle_shares_and_bound_nesting(tmp_path):
    laughs, deep = tmp_path / "laughs.pth", tmp_path / "deep.pth"
    write_zip_checkpoint(laughs, _billion_laughs())
    write_zip_checkpoint(deep, _deep_nesting())
    tree = mio.read_torch_checkpoint(laughs)  # 10**30 paths, but each list converted once
    assert tree["w"][0] is tree["w"][9]
    assert_refused_cheaply(lambda: mio.read_torch_checkpoint(deep), ResourceLimitError,
                           r"nesting depth of the checkpoint is 101, over the limit of 100.*max_depth")


def test_legacy_storages_are_checked_against_the_file_before_reading(tmp_path):
    pickled = handmade_tensor_pickle(numel=2**40, size=(2,), stride=(1,)).replace(
        unicode_op("cpu") + int_tuple_op((2**40,))[1:-1] + pickle.TUPLE,
        unicode_op("cpu") + int_tuple_op((2**40,))[1:-1] + pickle.NONE + pickle.TUPLE)  # legacy ids have a view field
    path = tmp_path / "legacy.pth"
    write_legacy_checkpoint(path, pickled, keys=["0"], storages=struct.pack("<q", 2**40) + bytes(64))
    assert_refused_cheaply(lambda: mio.load_state_dict(path), CheckpointError,
                           r"legacy\.pth'.*storage '0' of 4,398,046,511,104 bytes is truncated")


def test_pickle_op_and_size_limits_can_be_raised(tmp_path):
    state = {f"t{i}": np.full(3, i, np.float32) for i in range(200)}
    path = tmp_path / "many.safetensors"
    mio.save_state_dict(state, path)
    with pytest.raises(ResourceLimitError, match=r"many\.safetensors'.*over the limit of 1,000 \(given\)"):
        mio.load_state_dict(path, limits=ReadLimits(max_bytes=1000))
    assert len(mio.load_state_dict(path)) == 200
    legacy = tmp_path / "ops.pth"
    write_legacy_checkpoint(legacy, pickle.dumps({"x": list(range(3000))}, protocol=2))
    with pytest.raises(ResourceLimitError, match=r"pickle opcodes is 1,001.*max_pickle_ops"):
        mio.read_torch_checkpoint(legacy, limits=ReadLimits(max_pickle_ops=1000))
    assert mio.read_torch_checkpoint(legacy)["x"][-1] == 2999


def _safetensors(header, data=b""):
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("case, raw, message", [
    ("shape 2**64", _safetensors({"a": {"dtype": "F32", "shape": [2**64], "data_offsets": [0, 4]}}, bytes(4)),
     "invalid shape"),
    ("bool shape", _safetensors({"a": {"dtype": "F32", "shape": [True, 6], "data_offsets": [0, 24]}}, bytes(24)),
     "invalid shape"),
    ("string dtype list", _safetensors({"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
     "unsupported dtype"),
    ("nested header", _safetensors(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "nested too deeply"),
    ("overlap", _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)),
     "overlaps the tensor before it"),
    ("same bytes twice", _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
     "overlaps"),
    ("duplicate name", _safetensors(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                    b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)),
     r"names \['a'\] twice"),
    ("gap", _safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)), "gap at byte 0"),
    ("past the end", _safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)),
     "outside the buffer"),
    ("huge element count", _safetensors({"a": {"dtype": "F64", "shape": [10**6, 10**6], "data_offsets": [0, 8]}},
                                        bytes(8)), "needs 8000000000000 bytes"),
])
def test_hostile_safetensors_are_refused_cheaply(tmp_path, case, raw, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    assert_refused_cheaply(lambda: mio.load_state_dict(path), CheckpointError, rf"bad\.safetensors'.*{message}")


def _npz_with_header(path, shape, descr="<f4", data=b""):
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    buffer = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", buffer.getvalue() + data)


@pytest.mark.parametrize("shape, descr, message", [
    ((10**12,), "<f4", r"declares shape \(1000000000000,\) .* but holds 16 bytes"),
    ((2**64,), "<f4", "invalid shape"),
    ((4,), "|O", "without pickle.*object"),
    ((4,), [("a", "<f4")], "only plain numeric"),
])
def test_hostile_npz_headers_are_refused_cheaply(tmp_path, shape, descr, message):
    path = tmp_path / "bad.npz"
    _npz_with_header(path, shape, descr, data=bytes(16))
    assert_refused_cheaply(lambda: mio.load_state_dict(path), CheckpointError, rf"bad\.npz'.*{message}")


def test_format_comes_from_the_bytes_not_the_extension(tmp_path, rng):
    state = {"a.weight": rng.standard_normal((3, 2)).astype(np.float32), "n": np.array(7, np.int64)}
    mio.save_state_dict(state, tmp_path / "w.npz")
    mio.save_state_dict(state, tmp_path / "w.safetensors")
    write_zip_checkpoint(tmp_path / "t.pth", handmade_tensor_pickle(), {"data/0": np.arange(4, dtype="<f4").tobytes()})
    renamed = {"w.npz": "weights.pth", "w.safetensors": "weights.bin", "t.pth": "torch.npz"}
    for old, new in renamed.items():
        (tmp_path / new).write_bytes((tmp_path / old).read_bytes())
    for new in ("weights.pth", "weights.bin"):
        loaded = mio.load_state_dict(tmp_path / new)
        assert set(loaded) == set(state) and all(np.array_equal(loaded[k], v) for k, v in state.items())
    torch_as_npz = mio.load_state_dict(tmp_path / "torch.npz")  # used to come back as raw bytes
    np.testing.assert_array_equal(torch_as_npz["w"], np.arange(4, dtype=np.float32).reshape(2, 2))
    no_extension = tmp_path / "checkpoint"
    no_extension.write_bytes((tmp_path / "t.pth").read_bytes())
    assert mio.sniff_format(no_extension) == "torch-zip" and "w" in mio.load_state_dict(no_extension)


@pytest.mark.parametrize("name, raw, message", [
    ("random.pth", bytes(range(256)) * 4, "bad magic|corrupt"),
    ("random.th", bytes(range(256)) * 4, "bad magic|corrupt"),
    ("random.weights", bytes(range(256)) * 4, r"not a weight file .* first bytes"),
    ("text.ckpt", b"hello, world\n", "corrupt or truncated pickle"),
    ("plain.pkl", pickle.dumps({"a": 1}, protocol=2), r"not a weight file .* first bytes"),
    ("legacy_then_garbage.pth", legacy_header() + b"\xff" * 40, "corrupt"),
])
def test_unrecognised_or_corrupt_files_name_the_file_and_the_problem(tmp_path, name, raw, message):
    path = tmp_path / name
    path.write_bytes(raw)
    assert_refused_cheaply(lambda: mio.load_state_dict(path), CheckpointError, rf"{name}'.*({message})")


def test_zips_and_arrays_that_are_not_weight_files(tmp_path):
    other = tmp_path / "docs.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match=r"docs\.zip' is a zip archive but neither .*'readme\.txt'"):
        mio.load_state_dict(other)
    single = tmp_path / "one.pth"
    with open(single, "wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(CheckpointError, match=r"one\.pth' holds a single \.npy array"):
        mio.load_state_dict(single)
    bzip = tmp_path / "bz.npz"
    with zipfile.ZipFile(bzip, "w", compression=zipfile.ZIP_BZIP2) as z:
        z.writestr("w.npy", b"x")
    with pytest.raises(CheckpointError, match="only stored and deflated records"):
        mio.load_state_dict(bzip)
    twice = tmp_path / "twice.npz"
    with zipfile.ZipFile(twice, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for _ in range(2):
            with z.open("w.npy", "w") as member:
                np.lib.format.write_array(member, np.ones(2))
    with pytest.raises(CheckpointError, match="two records of the same name"):
        mio.load_state_dict(twice)


def test_a_storage_global_from_gpu_training_and_unused_globals(tmp_path):
    pickled = handmade_tensor_pickle().replace(global_op("torch", "FloatStorage"),
                                               global_op("torch.cuda", "FloatStorage"))
    path = tmp_path / "gpu.pth"
    write_zip_checkpoint(path, pickled, {"data/0": np.arange(4, dtype="<f4").tobytes()})
    np.testing.assert_array_equal(mio.load_state_dict(path)["w"], [[0, 1], [2, 3]])
