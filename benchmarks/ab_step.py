"""In-process A/B of minires settings: alternate variants step by step, print median step times.

Usage::

    python benchmarks/ab_step.py [--model resnet20] [--infer] [--rounds 16] STATEMENT STATEMENT ...

Each STATEMENT is Python run before every step of its variant, with ``mr`` (minires),
``nn`` (minires.nn), ``F`` (minires.functional), ``config`` (minires.config), ``cf``
(minires.kernels.conv_fast), ``fu`` (minires.kernels.fused) and ``par``
(minires.kernels.parallel) in scope, e.g.::

    python benchmarks/ab_step.py "nn.set_fusion(True)" "nn.set_fusion(False)"
    python benchmarks/ab_step.py "config.set(fast_paths=True)" "config.set(fast_paths=False)"
    python benchmarks/ab_step.py --infer "fu._CHUNK_BYTES = 1 << 20" "fu._CHUNK_BYTES = 256 << 10"

The variants share one process, model and batch and alternate every step (the order is
reversed every other round), so the slow drifts of a shared machine fall on all of them
alike; a ratio to the first variant is printed. This is how the changes listed in
``benchmarks/results/speed.md`` were accepted or dropped; ``benchmarks/speed.py`` is the
cross-framework measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import speed  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="Python statements, one per variant")
    parser.add_argument("--model", default="resnet20", choices=speed.MODELS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--infer", action="store_true", help="time eval-mode inference under no_grad")
    args = parser.parse_args(argv)

    import minires as mr  # noqa: PLC0415
    import minires.functional as F  # noqa: PLC0415
    import minires.kernels.conv_fast as cf  # noqa: PLC0415
    import minires.kernels.fused as fu  # noqa: PLC0415
    import minires.kernels.parallel as par  # noqa: PLC0415
    from minires import config, nn  # noqa: PLC0415

    scope = {"mr": mr, "F": F, "nn": nn, "config": config, "cf": cf, "fu": fu, "par": par}
    images_np, labels_np = speed._batch(args.batch_size)
    mr.manual_seed(0)
    model, opt = speed.minires_model_and_sgd(args.model)
    images, labels = mr.tensor(images_np), mr.tensor(labels_np)
    if args.infer:
        model.eval()

    def step():
        if args.infer:
            with mr.no_grad():
                model(images)
            return
        opt.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        opt.step()

    times = {v: [] for v in args.variants}
    for variant in args.variants:  # warm-up: buffers and caches of every variant
        exec(variant, scope)  # noqa: S102 - the user's own statements
        step()
        step()
    for r in range(args.rounds):
        for variant in args.variants if r % 2 == 0 else args.variants[::-1]:
            exec(variant, scope)  # noqa: S102
            start = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - start)
    base = statistics.median(times[args.variants[0]])
    what = "inference" if args.infer else "training step"
    print(f"{args.model}, batch {args.batch_size}, {what}, {args.rounds} alternated rounds (median)")
    for variant in args.variants:
        m = statistics.median(times[variant])
        print(f"{m * 1e3:8.1f} ms  ({m / base:.3f})  {variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
