"""Profile one minires training step (or inference) with cProfile and print the top functions.

Usage::

    python benchmarks/profile_step.py --model resnet20 --batch-size 128 --steps 3 [--infer] [--sort tottime]

It builds the same model and batch as ``benchmarks/speed.py``, runs two warm-up steps, then
profiles ``--steps`` steps and prints the ``--top`` functions by ``--sort`` (``tottime``: time
inside the function itself, the useful view for NumPy-heavy code; ``cumtime``: including
callees). Wall time per step with and without the profiler is printed too.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import speed  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20", choices=speed.MODELS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--infer", action="store_true", help="profile eval-mode inference instead")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--conv-algorithm", default="auto")
    parser.add_argument("--cpu-time", action="store_true", help="profile CPU time of this thread (use with 1 thread)")
    parser.add_argument("--dtype-audit", action="store_true",
                        help="instead of profiling, check that one float32 step makes no float64 array: every op "
                             "output, every gradient an op's backward returns, every parameter gradient")
    args = parser.parse_args(argv)

    import minires as mr  # noqa: PLC0415
    import minires.functional as F  # noqa: PLC0415
    from minires.kernels.conv import set_conv_algorithm  # noqa: PLC0415
    set_conv_algorithm(args.conv_algorithm)
    images_np, labels_np = speed._batch(args.batch_size)
    mr.manual_seed(0)
    model, opt = speed.minires_model_and_sgd(args.model)
    images, labels = mr.tensor(images_np), mr.tensor(labels_np)

    def train_step():
        opt.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()

    def infer():
        with mr.no_grad():
            model(images)

    if args.infer:
        model.eval()
    fn = infer if args.infer else train_step
    if args.dtype_audit:
        return dtype_audit(fn, model)
    for _ in range(2):
        fn()
    start = time.perf_counter()
    for _ in range(args.steps):
        fn()
    plain = (time.perf_counter() - start) / args.steps
    profiler = cProfile.Profile(time.process_time) if args.cpu_time else cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(args.steps):
        fn()
    profiler.disable()
    profiled = (time.perf_counter() - start) / args.steps
    print(f"{'inference' if args.infer else 'train step'}: {plain * 1e3:.1f} ms/step "
          f"({profiled * 1e3:.1f} ms under the profiler)")
    stats = pstats.Stats(profiler)
    stats.sort_stats(args.sort).print_stats(args.top)
    return 0


def dtype_audit(fn, model) -> int:
    """Run ``fn`` once with every op's forward and backward wrapped; list float64 arrays."""
    import numpy as np  # noqa: PLC0415

    from minires.autograd import record_ops  # noqa: PLC0415
    bad, seen = [], {"forward": 0, "backward": 0}

    def check(where, name, array):
        if isinstance(array, np.ndarray) and array.dtype.kind == "f":
            seen[where] += 1
            if array.dtype != np.float32:
                bad.append(f"{where} {name}: {array.dtype} {array.shape}")

    def audit(entry):
        cls, _, _, out = entry
        check("forward", cls.__name__, out.data)
        ctx = out.grad_fn
        if ctx is not None and not getattr(ctx, "_audited", False):
            backward = ctx.backward

            def audited_backward(grad, _backward=backward, _name=cls.__name__):
                grads = _backward(grad)
                for g in grads if isinstance(grads, tuple) else (grads,):
                    check("backward", _name, g)
                return grads

            ctx.backward = audited_backward
            ctx._audited = True

    with record_ops(observer=audit):
        fn()
    for name, p in model.named_parameters():
        check("backward", "param " + name, p.grad)
    print(f"dtype audit: {seen['forward']} op outputs and {seen['backward']} gradients checked, "
          f"{len(bad)} not float32")
    for line in bad[:20]:
        print("  ", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
