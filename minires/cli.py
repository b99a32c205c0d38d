"""The ``minires`` command line: ``train``, ``eval``, ``weights``, ``models``, ``gradflow``, ``plot``.

Each subcommand is one ``add_<name>_parser(subparsers)`` function that builds its
subparser and sets ``func`` to the function that runs it; :data:`COMMANDS` lists them
in the order ``minires --help`` shows them. Adding a subcommand is adding one such
function and one entry in :data:`COMMANDS`; a subcommand too large for this front lives
in its own module of :mod:`minires.commands` (``train``, ``eval``, ``gradflow``), whose
``add_<name>_parser`` :data:`COMMANDS` names.

Errors a user can cause (unknown model, missing data, bad values, a checkpoint that does
not match) print one clear ``minires: error: ...`` line and exit non-zero, without a
traceback; ``MINIRES_DEBUG=1`` shows the traceback.

Under an MPI launcher (``mpiexec -n 4 minires train ...``; see :mod:`minires.distributed`)
every process joins the world before anything else, so that an error on one rank can
abort the others instead of leaving them waiting; errors all ranks raise alike are
printed once, by rank 0.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys

from . import config as settings
from . import distributed  # (imports no MPI by itself)
from .commands import train as train_command
from .commands.evaluate import add_eval_parser
from .commands.gradflow import add_gradflow_parser
# (EXIT_NONFINITE and FULL_RECIPE: imported from here as before the move into minires.commands)
from .commands.args import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NONFINITE, CLIError  # noqa: F401
from .commands.train import FULL_RECIPE  # noqa: F401

# the short demonstration `minires train` runs with no arguments (about 2 minutes of CPU time on 2 cores)
DEMO = {"model": "resnet20", "data": "embedded", "epochs": 5, "batch_size": 64, "lr": 0.1, "momentum": 0.9,
        "nesterov": True, "weight_decay": 5e-4, "schedule": "linear", "warmup_frac": 0.15}

# the defaults of `minires train` with flags: He et al.'s CIFAR recipe (64k steps at batch 128)
DEFAULTS = {"model": "resnet20", "epochs": 164, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
            "weight_decay": 1e-4, "schedule": "paper"}


# --- train (minires.commands.train) ----------------------------------------------------

def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """``minires train``: train a model (no arguments: the :data:`DEMO`; unset flags: :data:`DEFAULTS`).

    The flags, the settings' assembly and the run live in :mod:`minires.commands.train`.
    """
    return train_command.add_train_parser(subparsers, DEMO, DEFAULTS)


# --- weights --------------------------------------------------------------------------

def add_weights_parser(subparsers) -> argparse.ArgumentParser:
    """``minires weights``: the tensors of a weight file (names, dtypes, shapes), without reading their data."""
    p = subparsers.add_parser("weights", help="list the tensors in a weight file (any supported format)",
                              description="List the names, dtypes and shapes of the tensors in a PyTorch "
                                          "checkpoint (any extension), .safetensors or .npz file, without PyTorch "
                                          "and without reading the tensor data.")
    p.add_argument("file", help="the weight file")
    p.add_argument("--key", default=None, help="the checkpoint entry holding the state dict")
    p.set_defaults(func=run_weights)
    return p


def run_weights(args) -> int:
    """Run ``minires weights``."""
    from . import io  # noqa: PLC0415

    info = io.inspect_weights(args.file, key=args.key)
    print(f"{args.file}: {info.format}, {os.path.getsize(args.file):,} bytes")
    if info.nested_key is not None:
        extras = ", ".join(f"{k}={v}" for k, v in info.extras.items())
        print(f"state dict under {info.nested_key!r}" + (f" (other entries: {extras})" if extras else ""))
    width = max([len(name) for name in info.tensors] + [4])
    print(f"{'name':<{width}}  {'dtype':<9} shape")
    for name, tensor in info.tensors.items():
        print(f"{name:<{width}}  {tensor.dtype:<9} {tuple(tensor.shape)}")
    values = sum(math.prod(t.shape) for t in info.tensors.values())
    print(f"{len(info.tensors)} tensors, {values:,} values")
    return 0


# --- models ---------------------------------------------------------------------------

def add_models_parser(subparsers) -> argparse.ArgumentParser:
    """``minires models``: the model registry as a table."""
    p = subparsers.add_parser("models", help="list the available models (depth, parameters, MACs)",
                              description="List the models `--model` accepts, with depth, parameters and MACs.")
    p.add_argument("filter", nargs="?", default=None, help="show only names containing this text")
    p.set_defaults(func=run_models)
    return p


def run_models(args) -> int:
    """Run ``minires models``."""
    from . import models  # noqa: PLC0415

    names = [n for n in models.available() if args.filter is None or args.filter in n]
    if not names:
        raise CLIError(f"no model name contains {args.filter!r}; `minires models` lists them all")
    from .models.summary import summary_table  # noqa: PLC0415

    print(summary_table(names))
    return 0


# --- plot -----------------------------------------------------------------------------

def add_plot_parser(subparsers) -> argparse.ArgumentParser:
    """``minires plot``: figures of one or several run folders."""
    p = subparsers.add_parser(
        "plot", help="figures of training runs: learning curves, branch/skip heatmaps, per-layer norms",
        description="Draw one PNG per figure from the --out folders of `minires train`: learning curves "
                    "(runs overlaid), and with --track-gradients a heatmap of block x step of the branch/skip "
                    "ratio and the per-layer gradient norms and update ratios over steps (one panel per run). "
                    "Needs matplotlib.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (the --out of `minires train`)")
    p.add_argument("--out", default=None,
                   help="folder for the PNG files (default: the run folder for one run, ./plots for several)")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="names of the runs in the figures, one per RUN (default: the folder names)")
    p.set_defaults(func=run_plot)
    return p


def run_plot(args) -> int:
    """Run ``minires plot``."""
    from .train.plot import MATPLOTLIB_HINT, load_run, plot_runs, pyplot  # noqa: PLC0415

    if args.labels is not None and len(args.labels) != len(args.runs):
        raise CLIError(f"--labels: got {len(args.labels)} labels for {len(args.runs)} runs; give one per RUN")
    try:
        pyplot()
    except ImportError:
        raise CLIError(f"minires plot needs matplotlib: {MATPLOTLIB_HINT}") from None
    labels = args.labels or [None] * len(args.runs)
    runs = [load_run(folder, label) for folder, label in zip(args.runs, labels)]
    out = args.out or (args.runs[0] if len(args.runs) == 1 else "plots")
    for path in plot_runs(runs, out):
        print(path)
    if not any(r.gradients for r in runs):
        print("(no gradients.jsonl in these runs: train with --track-gradients N for the gradient-flow figures)")
    return 0


# --- entry point ----------------------------------------------------------------------

COMMANDS = [add_train_parser, add_eval_parser, add_models_parser, add_weights_parser, add_gradflow_parser,
            add_plot_parser]


def build_parser() -> argparse.ArgumentParser:
    """The ``minires`` parser with every subcommand of :data:`COMMANDS`."""
    from . import __version__  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="minires", description="minires: residual networks from scratch on NumPy/CuPy. "
                                    "`minires train` with no arguments runs a short demo.")
    parser.add_argument("--version", action="version", version=f"minires {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv=None) -> int:
    """Console entry point: parse ``argv`` and run the subcommand; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings.read_environment()  # a bad MINIRES_* value is refused before anything is written
        comm = distributed.init(force="--distributed" in argv)  # first, so a failing rank can end the others
    except (ValueError, ImportError) as exc:  # a bad MINIRES_* value; mpi4py missing under a launcher
        print(f"minires: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    status, collective = _run_command(args)
    if status != 0 and comm.size > 1 and not collective:
        # this rank alone failed: end the others, which would wait for it forever
        print(f"minires: rank {comm.rank} of {comm.size} failed; aborting all ranks", file=sys.stderr)
        distributed.get_communicator().abort(status)
    return status


def _run_command(args) -> tuple[int, bool]:
    """Run the subcommand: ``(exit status, whether every rank ends alike)``.

    A status the subcommand returns counts as every rank's (subcommands decide from
    values all ranks share); an exception counts as this rank's alone unless it is
    marked ``collective``.
    """
    try:
        return int(args.func(args) or 0), True
    except KeyboardInterrupt:
        print("minires: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED, False
    except Exception as exc:  # user-facing errors: one line, no traceback
        collective = getattr(exc, "collective", False)
        comm = distributed.get_communicator()
        speaks = comm.rank == 0 or not collective  # an error every rank raises alike is printed once
        if settings.get("debug"):
            if comm.size == 1:
                raise
            if speaks:
                import traceback  # noqa: PLC0415

                traceback.print_exc()
        where = f" (rank {comm.rank} of {comm.size})" if comm.size > 1 and not collective else ""
        if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
            status, message = EXIT_ERROR, f"minires: error{where}: {_describe_os_error(exc)}"
        elif _is_user_error(exc):
            status, message = EXIT_ERROR, f"minires: error{where}: {exc}"
        else:
            status, message = 1, (f"minires: internal error{where}: {type(exc).__name__}: {exc} (set MINIRES_DEBUG=1 "
                                  "for the traceback)")
        if speaks:
            print(message, file=sys.stderr)
        return status, collective


# OSErrors a user causes (and can fix): full disk, permissions, a file where a folder belongs, ...
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
                errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG}


def _describe_os_error(exc: OSError) -> str:
    """``exc`` as one line naming the file and what to do."""
    permissions, not_a_folder = "check its permissions, or choose another path", "a file stands where a folder is needed"
    hint = {errno.ENOSPC: "the disk is full: free some space and run again",
            errno.EDQUOT: "the disk quota is exhausted: free some space and run again",
            errno.EROFS: "the file system is read-only: choose another path",
            errno.EACCES: permissions, errno.EPERM: permissions,
            errno.ENOTDIR: not_a_folder, errno.EEXIST: not_a_folder}.get(exc.errno, "check the path")
    return f"{exc.filename or 'a file'}: {exc.strerror or exc}; {hint}"


def _is_user_error(exc: Exception) -> bool:
    from .data import DownloadError, UnsafePickleError  # noqa: PLC0415
    from .train import TrainingError  # noqa: PLC0415

    return isinstance(exc, (CLIError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
                            TrainingError, DownloadError, UnsafePickleError, distributed.ConfigurationMismatch))


if __name__ == "__main__":
    sys.exit(main())
