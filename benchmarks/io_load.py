"""Time reading weight files: minires.io in every format, against torch.load where PyTorch is installed.

Writes a model's state dict (random weights) as safetensors, .npz, and, with PyTorch, as
torch.save zip and legacy files, then times ``minires.io.load_state_dict`` (and
``minires.io.inspect_weights``) on each, best of ``--rounds``. The checks on every size a
file states (resource bounds, pickle scan) are part of what is timed.

    python benchmarks/io_load.py --model resnet50 --rounds 5
    python benchmarks/io_load.py --model resnet20 --rounds 1     # seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minires as mr  # noqa: E402
import minires.io as mio  # noqa: E402


def best_time(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def write_files(state: dict, folder: str) -> dict:
    """``{label: path}`` of the state dict in every format this machine can write."""
    files = {"safetensors": os.path.join(folder, "w.safetensors"), "npz": os.path.join(folder, "w.npz")}
    mio.save_state_dict(state, files["safetensors"])
    mio.save_state_dict(state, files["npz"])
    try:
        import torch
    except ImportError:
        return files
    tensors = {k: torch.from_numpy(v.copy()) for k, v in state.items()}
    for label, zip_format in (("torch zip", True), ("torch legacy", False)):
        files[label] = os.path.join(folder, f"{label.replace(' ', '_')}.pth")
        torch.save(tensors, files[label], _use_new_zipfile_serialization=zip_format)
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    state = {k: v for k, v in mr.models.create(args.model).state_dict().items()}
    nbytes = sum(v.nbytes for v in state.values())
    print(f"{args.model}: {len(state)} tensors, {nbytes / 2**20:.1f} MiB; best of {args.rounds} rounds")
    print(f"{'format':<14} {'load_state_dict':>16} {'inspect_weights':>16} {'torch.load':>11}")
    with tempfile.TemporaryDirectory() as folder:
        for label, path in write_files(state, folder).items():
            load = best_time(lambda: mio.load_state_dict(path), args.rounds)
            inspect = best_time(lambda: mio.inspect_weights(path), args.rounds)
            reference = "-"
            if label.startswith("torch"):
                import torch

                reference = f"{best_time(lambda: torch.load(path, weights_only=True), args.rounds) * 1e3:9.1f}ms"
            print(f"{label:<14} {load * 1e3:14.1f}ms {inspect * 1e3:14.1f}ms {reference:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
