"""What `minires train --track-gradients N` costs: a tracked step against a plain one, and whole epochs.

Two measurements (run both on a quiet machine; the bound is 5% of a ResNet-20 CIFAR epoch
on the CPU with N = 50):

1. Steps (default): one process, one model and batch; plain and tracked training steps
   alternate (the order reversed every other round, so slow drifts of the machine fall
   on both alike). A tracked step is the real thing: block hooks, the skip-term VJPs,
   every norm, the weight copy, and the JSON line appended (and fsynced) to a file. The
   overhead of tracking every N steps is ``(tracked - plain) / (N * plain)``.
2. Epochs (``--epochs-data PATH``): ``minires``'s trainer runs one epoch with tracking
   off and one with ``--track-gradients N``, ``--repeats`` times alternately; the
   training seconds of each epoch (``metrics.jsonl``) are compared.

Usage::

    python benchmarks/track_overhead.py                                   # steps, ResNet-20, batch 128
    python benchmarks/track_overhead.py --epochs-data PATH/cifar-10-batches-py --repeats 2

It prints the medians and the overhead in percent, and exits 1 when the overhead is above
``--bound`` (5%).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import minires as mr  # noqa: E402
import minires.functional as F  # noqa: E402
from minires import models, optim  # noqa: E402
from minires.analysis import GradientTracker, TrackedStep  # noqa: E402
from minires.train import TrainConfig, Trainer  # noqa: E402
from minires.train.jsonl import append_jsonl  # noqa: E402


def step_times(args) -> tuple[list, list]:
    """Median-ready lists of plain and tracked step seconds (alternating, see the module docstring)."""
    rng = np.random.default_rng(0)
    images = mr.tensor(rng.standard_normal((args.batch_size, 3, 32, 32)).astype(np.float32))
    labels = mr.tensor(rng.integers(0, 10, args.batch_size))
    mr.manual_seed(0)
    model = models.create(args.model)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    tracker = GradientTracker(model, every=1)
    out = tempfile.mkdtemp(prefix="track_overhead.")
    path = os.path.join(out, "gradients.jsonl")

    def step(tracked: bool) -> float:
        start = time.perf_counter()
        with TrackedStep(tracker, 0, tracked) as record:
            loss = F.cross_entropy(model(images), labels)
            opt.zero_grad()
            loss.backward()
            if tracked:
                record.measure(epoch=1, loss=float(loss.item()), lr=0.01)
            opt.step()
        if tracked:
            append_jsonl(path, record.record)
        return time.perf_counter() - start

    for tracked in (False, True, False, True):  # warm-up: buffers, caches, the file
        step(tracked)
    plain, tracked_times = [], []
    for r in range(args.rounds):
        for tracked in ((False, True) if r % 2 == 0 else (True, False)):
            (tracked_times if tracked else plain).append(step(tracked))
    os.remove(path)
    os.rmdir(out)
    return plain, tracked_times


def epoch_seconds(args) -> tuple[list, list]:
    """Training seconds of one epoch with tracking off and on, ``--repeats`` times alternately."""
    off, on = [], []
    with tempfile.TemporaryDirectory(prefix="track_overhead.") as root:
        for r in range(args.repeats):
            for every in ((0, args.every) if r % 2 == 0 else (args.every, 0)):
                config = TrainConfig(model=args.model, data=args.epochs_data, epochs=1, batch_size=args.batch_size,
                                     train_subset=args.train_subset, test_subset=args.test_subset,
                                     out=os.path.join(root, f"r{r}-{every}"), progress=False, plot=False,
                                     track_gradients=every, checkpoint_every=10**9)
                seconds = Trainer(config, log=lambda *a: None).fit()["history"][-1]["train_seconds"]
                (on if every else off).append(seconds)
                print(f"  epoch {'tracked every %d' % every if every else 'untracked'}: {seconds:.1f} s", flush=True)
    return off, on


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20", help="a minires model name (default resnet20)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--every", type=int, default=50, help="the tracking interval N to evaluate (default 50)")
    p.add_argument("--rounds", type=int, default=20, help="alternated step pairs (default 20)")
    p.add_argument("--epochs-data", default=None,
                   help="time whole epochs through the trainer on this data ('embedded' or a CIFAR path) "
                        "instead of single steps")
    p.add_argument("--repeats", type=int, default=2, help="epoch pairs (with --epochs-data; default 2)")
    p.add_argument("--train-subset", type=int, default=0, help="with --epochs-data: first N training images")
    p.add_argument("--test-subset", type=int, default=1000, help="with --epochs-data: first N test images")
    p.add_argument("--bound", type=float, default=5.0, help="the allowed overhead in percent (default 5)")
    args = p.parse_args(argv)
    if args.epochs_data is None:
        plain, tracked = step_times(args)
        t_plain, t_tracked = statistics.median(plain), statistics.median(tracked)
        overhead = 100 * (t_tracked - t_plain) / (args.every * t_plain)
        print(f"{args.model}, batch {args.batch_size}, {args.rounds} alternated rounds (median): plain step "
              f"{t_plain * 1e3:.1f} ms, tracked step {t_tracked * 1e3:.1f} ms (+{(t_tracked - t_plain) * 1e3:.1f} ms)")
    else:
        off, on = epoch_seconds(args)
        t_off, t_on = statistics.median(off), statistics.median(on)
        overhead = 100 * (t_on - t_off) / t_off
        print(f"{args.model}, batch {args.batch_size}, data {args.epochs_data}: epoch {t_off:.1f} s untracked, "
              f"{t_on:.1f} s tracked every {args.every} steps (median of {args.repeats})")
    verdict = "within" if overhead <= args.bound else "ABOVE"
    print(f"tracking every {args.every} steps: {overhead:+.2f}% of training time ({verdict} the {args.bound:g}% bound)")
    return 0 if overhead <= args.bound else 1


if __name__ == "__main__":
    sys.exit(main())
