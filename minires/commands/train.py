"""``minires train``: its flags, the assembly of a :class:`~minires.train.TrainConfig` from
the flags, the run's saved settings and the presets, and the run.

The presets (the demo that ``minires train`` with no settings runs, and the defaults of
unset flags) are :data:`minires.cli.DEMO` and :data:`minires.cli.DEFAULTS`, which the
front passes to :func:`add_train_parser`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

from .. import distributed
from ..backend import default_device
from .args import (EXIT_INTERRUPTED, EXIT_NONFINITE, NORMALIZE_HELP, CLIError, check_device, device_arg, float_in,
                   int_at_least, normalize_arg)

# minires.cli.DEFAULTS, as one command line
FULL_RECIPE = ("minires train --model resnet20 --data PATH --epochs 164 --batch-size 128 --lr 0.1 "
               "--momentum 0.9 --weight-decay 1e-4 --schedule paper --out runs/resnet20")


def add_train_parser(subparsers, demo: dict, defaults: dict) -> argparse.ArgumentParser:
    """``minires train``: train a model (no arguments: the ``demo`` settings; unset flags: ``defaults``)."""
    p = subparsers.add_parser(
        "train", help="train a model (no arguments: a 1-2 minute demo on the embedded CIFAR-10 subset)",
        description="Train a CIFAR model. With no arguments: a short demonstration on the CIFAR-10 subset "
                    "shipped with minires. Unset flags take He et al.'s recipe (or, with --resume, the "
                    f"checkpoint's values). Full recipe: {FULL_RECIPE}")
    _add_recipe_flags(p)
    _add_run_flags(p)
    p.set_defaults(func=functools.partial(run_train, demo=demo, defaults=defaults))
    return p


def _add_recipe_flags(p) -> None:
    """The flags of the model, data and optimisation recipe (unset ones stay absent)."""
    S = argparse.SUPPRESS  # unset flags stay absent, so defaults can come from a checkpoint
    p.add_argument("--model", default=S, help="model name (see `minires models`; default resnet20)")
    p.add_argument("--data", default=S, help="'embedded', or a CIFAR archive/directory (default: search "
                                             "MINIRES_DATA, ~/.cache/minires, ./data)")
    p.add_argument("--dataset", default=S, choices=["cifar10", "cifar100"], help="default cifar10")
    p.add_argument("--epochs", type=int_at_least(1), default=S, help="default 164 (64k steps at batch 128)")
    p.add_argument("--batch-size", type=int_at_least(1), default=S, help="default 128")
    p.add_argument("--lr", type=float_in(0, low_open=True), default=S, help="peak learning rate (default 0.1)")
    p.add_argument("--momentum", type=float_in(0, 1), default=S, help="default 0.9")
    p.add_argument("--nesterov", action="store_true", default=S, help="Nesterov momentum")
    p.add_argument("--weight-decay", type=float_in(0), default=S,
                   help="L2 on conv/linear weights, not BN or biases (default 1e-4)")
    p.add_argument("--schedule", choices=["paper", "cosine", "linear"], default=S,
                   help="paper: /10 at 50%% and 75%% of the steps; cosine; linear: warm-up then linear to 0")
    p.add_argument("--warmup-frac", type=float_in(0, 1), default=S,
                   help="fraction of steps of linear warm-up (cosine, linear; default 0)")
    p.add_argument("--paper-warmup", action="store_true", default=S,
                   help="paper schedule: 400 steps at lr/10 first (ResNet-110/1202)")
    p.add_argument("--label-smoothing", type=float_in(0, 1), default=S, help="default 0")
    p.add_argument("--cutout", type=int_at_least(0), default=S, help="cutout square side, 0 = off (default)")
    p.add_argument("--shortcut", choices=["A", "B"], default=S, help="residual shortcut option, where it applies")
    p.add_argument("--normalize", type=normalize_arg, default=S, help=NORMALIZE_HELP + " (default train)")
    p.add_argument("--seed", type=int_at_least(0), default=S, help="default 0")


def _add_run_flags(p) -> None:
    """The flags of the run: device, output folder, resume, checkpoints, subsets, logging, data parallelism."""
    S = argparse.SUPPRESS
    p.add_argument("--device", type=device_arg, default=S, help="cpu, cuda or cuda:N (default: MINIRES_DEVICE or cpu)")
    p.add_argument("--out", default=S, help="output directory (default runs/<model>-<time>)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint (without one: start that run again "
                            "with the settings of its config.json); unset flags take the run's values")
    again.add_argument("--overwrite", action="store_true",
                       help="--out holds another run: move its files into --out/previous-<time>/ and start again")
    p.add_argument("--checkpoint-every", type=int_at_least(1), default=S, help="steps between checkpoints "
                                                                                 "(default 100)")
    p.add_argument("--eval-batch-size", type=int_at_least(1), default=S, help="default 250")
    p.add_argument("--train-subset", type=int_at_least(0), default=S, help="use the first N training images")
    p.add_argument("--test-subset", type=int_at_least(0), default=S, help="use the first N test images")
    p.add_argument("--check-md5", action="store_true", default=S, help="warn if data differs from official md5s")
    p.add_argument("--download", action="store_true", default=S,
                   help="download CIFAR into ~/.cache/minires if no data is found")
    p.add_argument("--track-gradients", type=int_at_least(0), default=S, metavar="N",
                   help="every N steps, record per-block skip/branch gradient norms and per-parameter gradient, "
                        "weight and update norms into OUT/gradients.jsonl (`minires plot OUT` draws them; "
                        "default 0: off)")
    p.add_argument("--demo", action="store_true", help="use the demo settings (what no arguments do)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plot", action="store_true", help="do not write curves.png")
    p.add_argument("--distributed", action="store_true",
                   help="join an MPI world even if no launcher variable says so (mpiexec/mpirun are detected; "
                        "--batch-size is the global batch, split over the ranks)")
    p.add_argument("--sync-bn", action="store_true", default=S,
                   help="data-parallel: batch-norm statistics over the global batch (default: each rank's part)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=S,
                   help="float32 (default) or float64 (slower; exactness checks)")


# parsed arguments that are not TrainConfig fields
_NOT_CONFIG = {"func", "command", "resume", "overwrite", "demo", "no_progress", "no_plot", "distributed"}
# flags that do not define the run: `minires train` with only these still runs the demo
_NOT_SETTINGS = _NOT_CONFIG | {"device", "out", "track_gradients"}


def _train_config(args, is_demo: bool, presets: dict):
    """The run's settings: ``presets`` (the demo's or the defaults), else the run's own on
    ``--resume``, overridden by the flags given."""
    from ..train import TrainConfig  # noqa: PLC0415
    from ..train.run_dir import read_run_config  # noqa: PLC0415

    explicit = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    values = dict(presets)
    if args.resume:
        if "out" not in explicit:
            raise CLIError("--resume needs --out DIR (the directory of the run to continue)")
        saved, _ = read_run_config(explicit["out"])
        if saved is not None:  # the run's own settings, never the defaults
            values = {k: v for k, v in saved.items() if k not in ("out", "progress", "plot")}
        elif not set(explicit) - _NOT_SETTINGS:
            raise CLIError(f"--resume: {explicit['out']} holds no run to continue (no checkpoint.npz or "
                           "config.json); give the run's settings as flags to start it, or check --out")
    values.update(explicit)
    values.setdefault("device", default_device())
    if "out" not in values:
        name = "demo" if is_demo else values["model"]
        values["out"] = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    values["progress"] = not args.no_progress
    values["plot"] = not args.no_plot
    return TrainConfig.from_dict(values).validate()


def run_train(args, demo: dict, defaults: dict) -> int:
    """Run ``minires train``: the ``demo`` settings when no setting is given, else ``defaults`` and the flags."""
    from ..train import NonFiniteLossError, Trainer  # noqa: PLC0415

    is_demo = args.demo or (not args.resume and not set(vars(args)) - _NOT_SETTINGS)
    comm = distributed.get_communicator()
    if comm.backend != "local":  # every rank must have been given the same flags
        distributed.check_same_everywhere(comm, {k: v for k, v in vars(args).items() if k != "func"}, "settings")
    # rank 0 settles the settings for all (it alone may see --out's files; a default --out holds the time)
    presets = demo if is_demo else defaults
    config = distributed.DataParallel(comm).from_writer(lambda: _train_config(args, is_demo, presets))
    check_device(config.device)
    if comm.size > 1 and config.device not in ("cpu", "cuda:0"):  # ('cuda' reads as cuda:0)
        raise CLIError(f"--device {config.device} with {comm.size} ranks: each rank uses the GPU of its local "
                       "rank (cuda:<local rank>); pass --device cuda")
    comm = distributed.init(config.device, force=args.distributed)
    writer = comm.is_writer
    if is_demo and writer:
        print(f"minires demo: {config.model} on the embedded CIFAR-10 subset (2,000 train / 1,000 test images), "
              f"{config.epochs} epochs; output in {config.out}")
    trainer = Trainer(config, comm=comm)
    try:
        result = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    except NonFiniteLossError as exc:
        if writer:
            print(f"minires: error: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    if result["status"] == "interrupted":
        return EXIT_INTERRUPTED
    if not writer:
        return 0
    acc = result.get("test_acc")
    print(f"done in {result['seconds']:.0f}s: test accuracy {acc * 100:.2f}% "
          f"(weights: {os.path.join(config.out, 'model.npz')}, metrics: {os.path.join(config.out, 'metrics.jsonl')})"
          if acc is not None else f"done: {config.out}")
    if is_demo:
        print("This was a short demo on 2,000 images (chance is 10%). The full recipe on CIFAR-10 "
              f"(He et al. 2016, about 91.7% for ResNet-20; use a GPU):\n  {FULL_RECIPE}\n"
              "Get CIFAR-10 with --download, or see `minires train --help`.")
    return 0
