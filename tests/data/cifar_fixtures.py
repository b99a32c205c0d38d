"""Synthetic CIFAR files in the exact official layouts (python-version pickles, binary records)."""

import os
import pickle
import struct
import tarfile

import numpy as np


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler writing bytes as Python 2 ``str`` and NumPy's 1.x module path,
    as the official CIFAR batch files were written."""

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        # Python 2 had no separate text type in these files: every str was a byte string
        self.save_bytes(obj.encode("latin1"))

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes
    dispatch[str] = save_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_dumps(obj) -> bytes:
    import io

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def random_split(rng, n, num_classes):
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=n)
    return images, labels


def write_cifar10_python(root, rng, per_batch=6, tar=False):
    """Write cifar-10-batches-py (5 train batches + test) under root; return (train, test) arrays."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = random_split(rng, per_batch, 10)
        xs.append(x)
        ys.append(y)
        _write(os.path.join(folder, f"data_batch_{i}"), {
            b"batch_label": f"training batch {i} of 5".encode(), b"labels": [int(v) for v in y],
            b"data": x.reshape(len(x), -1), b"filenames": [b"f%d.png" % j for j in range(len(y))]})
    xt, yt = random_split(rng, per_batch, 10)
    _write(os.path.join(folder, "test_batch"), {
        b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in yt], b"data": xt.reshape(len(xt), -1),
        b"filenames": [b"t%d.png" % j for j in range(len(yt))]})
    names = [b"n%d" % i for i in range(10)]
    _write(os.path.join(folder, "batches.meta"), {b"num_cases_per_batch": per_batch, b"label_names": names,
                                                  b"num_vis": 3072})
    if tar:
        _tar(folder, os.path.join(root, "cifar-10-python.tar.gz"))
    return (np.concatenate(xs), np.concatenate(ys)), (xt, yt)


def write_cifar100_python(root, rng, n=8, tar=False):
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    out = []
    for name in ("train", "test"):
        x, y = random_split(rng, n, 100)
        _write(os.path.join(folder, name), {
            b"filenames": [b"x.png"] * n, b"batch_label": b"x", b"fine_labels": [int(v) for v in y],
            b"coarse_labels": [int(v) // 5 for v in y], b"data": x.reshape(n, -1)})
        out.append((x, y))
    _write(os.path.join(folder, "meta"), {b"fine_label_names": [b"c%d" % i for i in range(100)],
                                          b"coarse_label_names": [b"s%d" % i for i in range(20)]})
    if tar:
        _tar(folder, os.path.join(root, "cifar-100-python.tar.gz"))
    return tuple(out)


def write_cifar10_binary(root, rng, per_batch=5, tar=False):
    folder = os.path.join(root, "cifar-10-batches-bin")
    os.makedirs(folder, exist_ok=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        x, y = random_split(rng, per_batch, 10)
        records = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(per_batch, -1)], axis=1)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(records.tobytes())
        xs.append(x)
        ys.append(y)
    with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
        f.write("\n".join(f"b{i}" for i in range(10)) + "\n\n")
    if tar:
        _tar(folder, os.path.join(root, "cifar-10-binary.tar.gz"))
    return (np.concatenate(xs[:5]), np.concatenate(ys[:5])), (xs[5], ys[5])


def write_cifar100_binary(root, rng, n=7):
    folder = os.path.join(root, "cifar-100-binary")
    os.makedirs(folder, exist_ok=True)
    out = []
    for name in ("train.bin", "test.bin"):
        x, y = random_split(rng, n, 100)
        records = np.concatenate([(y // 5).astype(np.uint8)[:, None], y.astype(np.uint8)[:, None],
                                  x.reshape(n, -1)], axis=1)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(records.tobytes())
        out.append((x, y))
    return tuple(out)


def _write(path, obj):
    with open(path, "wb") as f:
        f.write(py2_dumps(obj))


def _tar(folder, dest):
    with tarfile.open(dest, "w:gz") as t:
        t.add(folder, arcname=os.path.basename(folder))
