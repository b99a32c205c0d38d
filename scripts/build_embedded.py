#!/usr/bin/env python3
"""Rebuild minires/data/embedded/cifar10_subset.npz, the embedded CIFAR-10 subset.

    python scripts/build_embedded.py [--source DIR] [--train-per-class 200] [--test-per-class 100]

Without ``--source`` it runs ``make_cifar10.py`` from ``../shared/data/cifar10/`` (next to
the repository; needs Pillow, a build-time dependency only) into a temporary directory
and reads the python-version batches from there. With ``--source`` it reads any CIFAR-10
copy that ``minires.data.read_cifar`` accepts (archive or directory).

The subset is class-balanced and drawn with a fixed seed, coded losslessly by
``minires.data.embedded.encode_images`` and checked by decoding it again. The file
must stay under ``--max-bytes`` (5 MB).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from minires.data.cifar import read_cifar  # noqa: E402
from minires.data.embedded import CODEC, EMBEDDED_PATH, decode_images, encode_images  # noqa: E402

DEFAULT_MAKER = os.path.join(os.path.dirname(REPO), "shared", "data", "cifar10", "make_cifar10.py")


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` random examples of each class, shuffled together."""
    picks = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise SystemExit(f"class {c} has only {len(members)} examples, {per_class} requested")
        picks.append(rng.choice(members, per_class, replace=False))
    return rng.permutation(np.concatenate(picks))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="a CIFAR-10 archive or directory (default: run make_cifar10.py)")
    parser.add_argument("--maker", default=DEFAULT_MAKER, help="path of make_cifar10.py")
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-bytes", type=int, default=5_000_000)
    parser.add_argument("--out", default=EMBEDDED_PATH)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        source = args.source
        if source is None:
            if not os.path.isfile(args.maker):
                raise SystemExit(f"{args.maker} not found; pass --source or --maker")
            subprocess.run([sys.executable, args.maker, tmp], check=True)
            source = tmp
        train, test = read_cifar(source, "cifar10")

    rng = np.random.default_rng(args.seed)
    arrays = {"codec": np.frombuffer(CODEC.encode(), np.uint8)}
    for split, data, per_class in (("train", train, args.train_per_class), ("test", test, args.test_per_class)):
        idx = balanced_subset(data.labels, per_class, rng)
        images, labels = data.images[idx], data.labels[idx].astype(np.uint8)
        residuals = encode_images(images)
        if not np.array_equal(decode_images(residuals), images):
            raise SystemExit("internal error: the embedded codec did not round-trip")
        arrays[f"{split}_residuals"] = residuals
        arrays[f"{split}_labels"] = labels
        print(f"{split}: {len(labels)} images, {per_class} per class")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp_out = args.out + ".tmp.npz"
    np.savez_compressed(tmp_out, **arrays)
    size = os.path.getsize(tmp_out)
    if size > args.max_bytes:
        os.remove(tmp_out)
        raise SystemExit(f"subset is {size:,} bytes, over the {args.max_bytes:,}-byte limit; use fewer images")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out} ({size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
