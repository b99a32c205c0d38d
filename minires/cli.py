"""The ``minires`` command line: ``train``, ``eval``, ``weights``, ``models``, ``gradflow``, ``plot``.

Each subcommand is one ``add_<name>_parser(subparsers)`` function that builds its
subparser and sets ``func`` to the function that runs it; :data:`COMMANDS` lists them
in the order ``minires --help`` shows them. Adding a subcommand is adding one such
function and one entry in :data:`COMMANDS`.

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
import time

from . import config as settings

EXIT_ERROR = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130

# the short demonstration `minires train` runs with no arguments (about 2 minutes of CPU time on 2 cores)
DEMO = {"model": "resnet20", "data": "embedded", "epochs": 5, "batch_size": 64, "lr": 0.1, "momentum": 0.9,
        "nesterov": True, "weight_decay": 5e-4, "schedule": "linear", "warmup_frac": 0.15}

# the defaults of `minires train` with flags: He et al.'s CIFAR recipe (64k steps at batch 128)
DEFAULTS = {"model": "resnet20", "epochs": 164, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
            "weight_decay": 1e-4, "schedule": "paper"}

FULL_RECIPE = ("minires train --model resnet20 --data PATH --epochs 164 --batch-size 128 --lr 0.1 "
               "--momentum 0.9 --weight-decay 1e-4 --schedule paper --out runs/resnet20")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# --- argument types -------------------------------------------------------------------

def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return parse


def _float_in(low, high=math.inf, high_open=True, low_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and \
            (value < high if high_open else value <= high)
        if not ok:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"expected a number in {left}{low}, {high}{right}, got {text}")
        return value
    return parse


def _normalize(text):
    from .data.normalization import parse_normalize  # noqa: PLC0415

    try:
        return parse_normalize(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


NORMALIZE_HELP = ("input normalisation: train (the training split's per-channel mean/std), cifar (the published "
                  "CIFAR statistics), imagenet, none, or MEAN,STD / M1,M2,M3,S1,S2,S3 in [0, 1] pixel units")


def _device(text):
    from .backend import parse_device  # noqa: PLC0415

    try:
        return parse_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_device(device: str) -> None:
    from .backend import cuda_available  # noqa: PLC0415

    if device != "cpu" and not cuda_available():
        from .backend import CUPY_INSTALL_HINT  # noqa: PLC0415

        raise CLIError(f"--device {device}: CuPy or a GPU is not available; {CUPY_INSTALL_HINT}")


# --- train ----------------------------------------------------------------------------

def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """``minires train``: train a model (no arguments: a short demo on the embedded subset)."""
    p = subparsers.add_parser(
        "train", help="train a model (no arguments: a 1-2 minute demo on the embedded CIFAR-10 subset)",
        description="Train a CIFAR model. With no arguments: a short demonstration on the CIFAR-10 subset "
                    "shipped with minires. Unset flags take He et al.'s recipe (or, with --resume, the "
                    f"checkpoint's values). Full recipe: {FULL_RECIPE}")
    S = argparse.SUPPRESS  # unset flags stay absent, so defaults can come from a checkpoint
    p.add_argument("--model", default=S, help="model name (see `minires models`; default resnet20)")
    p.add_argument("--data", default=S, help="'embedded', or a CIFAR archive/directory (default: search "
                                             "MINIRES_DATA, ~/.cache/minires, ./data)")
    p.add_argument("--dataset", default=S, choices=["cifar10", "cifar100"], help="default cifar10")
    p.add_argument("--epochs", type=_int_at_least(1), default=S, help="default 164 (64k steps at batch 128)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=S, help="default 128")
    p.add_argument("--lr", type=_float_in(0, low_open=True), default=S, help="peak learning rate (default 0.1)")
    p.add_argument("--momentum", type=_float_in(0, 1), default=S, help="default 0.9")
    p.add_argument("--nesterov", action="store_true", default=S, help="Nesterov momentum")
    p.add_argument("--weight-decay", type=_float_in(0), default=S,
                   help="L2 on conv/linear weights, not BN or biases (default 1e-4)")
    p.add_argument("--schedule", choices=["paper", "cosine", "linear"], default=S,
                   help="paper: /10 at 50%% and 75%% of the steps; cosine; linear: warm-up then linear to 0")
    p.add_argument("--warmup-frac", type=_float_in(0, 1), default=S,
                   help="fraction of steps of linear warm-up (cosine, linear; default 0)")
    p.add_argument("--paper-warmup", action="store_true", default=S,
                   help="paper schedule: 400 steps at lr/10 first (ResNet-110/1202)")
    p.add_argument("--label-smoothing", type=_float_in(0, 1), default=S, help="default 0")
    p.add_argument("--cutout", type=_int_at_least(0), default=S, help="cutout square side, 0 = off (default)")
    p.add_argument("--shortcut", choices=["A", "B"], default=S, help="residual shortcut option, where it applies")
    p.add_argument("--normalize", type=_normalize, default=S, help=NORMALIZE_HELP + " (default train)")
    p.add_argument("--seed", type=_int_at_least(0), default=S, help="default 0")
    p.add_argument("--device", type=_device, default=S, help="cpu, cuda or cuda:N (default: MINIRES_DEVICE or cpu)")
    p.add_argument("--out", default=S, help="output directory (default runs/<model>-<time>)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint (without one: start that run again "
                            "with the settings of its config.json); unset flags take the run's values")
    again.add_argument("--overwrite", action="store_true",
                       help="--out holds another run: move its files into --out/previous-<time>/ and start again")
    p.add_argument("--checkpoint-every", type=_int_at_least(1), default=S, help="steps between checkpoints "
                                                                                 "(default 100)")
    p.add_argument("--eval-batch-size", type=_int_at_least(1), default=S, help="default 250")
    p.add_argument("--train-subset", type=_int_at_least(0), default=S, help="use the first N training images")
    p.add_argument("--test-subset", type=_int_at_least(0), default=S, help="use the first N test images")
    p.add_argument("--check-md5", action="store_true", default=S, help="warn if data differs from official md5s")
    p.add_argument("--download", action="store_true", default=S,
                   help="download CIFAR into ~/.cache/minires if no data is found")
    p.add_argument("--track-gradients", type=_int_at_least(0), default=S, metavar="N",
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
    p.set_defaults(func=run_train)
    return p


# flags that do not define the run: `minires train` with only these still runs the demo
_NOT_SETTINGS = {"func", "command", "resume", "overwrite", "demo", "no_progress", "no_plot", "device", "out",
                 "distributed", "track_gradients"}
# parsed arguments that are not TrainConfig fields
_NOT_CONFIG = {"func", "command", "resume", "overwrite", "demo", "no_progress", "no_plot", "distributed"}


def _train_config(args, demo: bool):
    from .train import TrainConfig  # noqa: PLC0415
    from .train.run_dir import read_run_config  # noqa: PLC0415

    explicit = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    values = dict(DEMO if demo else DEFAULTS)
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
    if "device" not in values:
        from .backend import default_device  # noqa: PLC0415

        values["device"] = default_device()
    if "out" not in values:
        values["out"] = os.path.join("runs", f"{'demo' if demo else values['model']}-{time.strftime('%Y%m%d-%H%M%S')}")
    values["progress"] = not args.no_progress
    values["plot"] = not args.no_plot
    return TrainConfig.from_dict(values).validate()



def run_train(args) -> int:
    """Run ``minires train`` (the demo when no setting is given: see :data:`DEMO`)."""
    from . import distributed  # noqa: PLC0415
    from .train import NonFiniteLossError, Trainer  # noqa: PLC0415

    demo = args.demo or (not args.resume and not set(vars(args)) - _NOT_SETTINGS)
    comm = distributed.get_communicator()
    if comm.backend != "local":  # every rank must have been given the same flags
        distributed.check_same_everywhere(comm, {k: v for k, v in vars(args).items() if k != "func"}, "settings")
    # rank 0 settles the settings for all (it alone may see --out's files; a default --out holds the time)
    config = distributed.DataParallel(comm).from_writer(lambda: _train_config(args, demo))
    _check_device(config.device)
    if comm.size > 1 and config.device not in ("cpu", "cuda:0"):  # ('cuda' reads as cuda:0)
        raise CLIError(f"--device {config.device} with {comm.size} ranks: each rank uses the GPU of its local "
                       "rank (cuda:<local rank>); pass --device cuda")
    comm = distributed.init(config.device, force=args.distributed)
    writer = comm.is_writer
    if demo and writer:
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
    if demo:
        print("This was a short demo on 2,000 images (chance is 10%). The full recipe on CIFAR-10 "
              f"(He et al. 2016, about 91.7% for ResNet-20; use a GPU):\n  {FULL_RECIPE}\n"
              "Get CIFAR-10 with --download, or see `minires train --help`.")
    return 0


# --- eval -----------------------------------------------------------------------------

def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """``minires eval``: accuracy of saved weights on a test split."""
    p = subparsers.add_parser("eval", help="evaluate saved weights on the test split",
                              description="Evaluate weights (OUT/model.npz, or a third-party checkpoint) on a CIFAR "
                                          "test split. Example for a published DataParallel CIFAR ResNet: minires eval "
                                          "--weights resnet20-12fca82f.th --model resnet20 --rename linear=fc "
                                          "--normalize imagenet")
    p.add_argument("--weights", required=True, help="a weight file: PyTorch checkpoint (any extension), "
                                                    ".safetensors or .npz")
    p.add_argument("--model", help="model name (default: from config.json beside the weights)")
    p.add_argument("--data", help="'embedded' or a CIFAR archive/directory (default: config.json's, else search)")
    p.add_argument("--dataset", choices=["cifar10", "cifar100"], help="default: config.json's, else cifar10")
    p.add_argument("--normalize", type=_normalize, default=None,
                   help=NORMALIZE_HELP + " (default: config.json's, else train)")
    p.add_argument("--key", default=None, help="the checkpoint entry holding the state dict (default: the top "
                                               "level, or its one 'state_dict'/'model'/... entry)")
    p.add_argument("--strip-prefix", default="module.", help="removed from keys that start with it "
                                                             "(default 'module.', as DataParallel adds; '' for none)")
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                   help="rename keys starting with the dotted prefix OLD (repeatable), e.g. linear=fc")
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=_int_at_least(1), default=250)
    p.add_argument("--test-subset", type=_int_at_least(0), default=0, help="use the first N test images (0: all)")
    p.set_defaults(func=run_eval)
    return p


def _saved_config(weights: str) -> dict:
    path = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.json")
    if not os.path.isfile(path):
        return {}
    from .train.run_dir import read_config_json  # noqa: PLC0415

    return read_config_json(path)


def _eval_normalization(args, saved: dict, model_name: str, dataset: str, train):
    """``(mean, std, description)``: --normalize, else config.json's recorded values, else the training split's."""
    import numpy as np  # noqa: PLC0415

    from .data import normalization_stats  # noqa: PLC0415

    if args.normalize is not None:
        mean, std = normalization_stats(args.normalize, dataset, train.images)
        return mean, std, args.normalize
    if "normalize_mean" in saved and (args.model is None or args.model == saved.get("model")):
        mean, std = np.asarray(saved["normalize_mean"], np.float32), np.asarray(saved["normalize_std"], np.float32)
        return mean, std, f"{saved.get('normalize', 'train')} (config.json)"
    mean, std = normalization_stats("train", dataset, train.images)
    return mean, std, "train"


def _load_eval_weights(args, model, model_name: str) -> None:
    from . import io  # noqa: PLC0415
    from .train.weights import WeightsMismatchError, first_mismatch, load_weights_strict  # noqa: PLC0415

    renames = {}
    for item in args.rename:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise CLIError(f"--rename {item!r}: expected OLD=NEW, e.g. --rename linear=fc")
        renames[old] = new
    try:
        state = io.load_state_dict(args.weights, key=args.key)
        state = io.rename_keys(state, renames, strip_prefix=args.strip_prefix or None)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CLIError(f"cannot load {args.weights} into {model_name}: {exc}") from None
    try:
        load_weights_strict(model, state, args.weights, model_name)
    except WeightsMismatchError as exc:
        own = model.state_dict()
        guesses = io.guess_renames(state, own)
        if not guesses:
            raise CLIError(str(exc)) from None
        hint = "".join(f" --rename {old}={new}" for old, new in guesses.items())
        raise CLIError(f"cannot load {args.weights} into {model_name}: {first_mismatch(own, state)}; the names "
                       f"differ by a prefix: try{hint}") from None


def run_eval(args) -> int:
    """Run ``minires eval``."""
    from .backend import parse_device  # noqa: PLC0415
    from .data import Dataset, Loader, load_dataset  # noqa: PLC0415
    from .train import TrainConfig, evaluate_model  # noqa: PLC0415
    from .train.setup import build_model  # noqa: PLC0415

    if not os.path.isfile(args.weights):
        raise CLIError(f"--weights {args.weights}: no such file")
    saved = _saved_config(args.weights)
    model_name = args.model or saved.get("model")
    if model_name is None:
        raise CLIError("--model is required (no config.json beside the weights to take it from)")
    dataset = args.dataset or saved.get("dataset", "cifar10")
    data = args.data if args.data is not None else saved.get("data")
    device = parse_device(args.device)
    _check_device(device)
    train, test = load_dataset(data, dataset)
    if args.test_subset and args.test_subset < len(test):
        test = Dataset(test.images[:args.test_subset], test.labels[:args.test_subset], test.classes,
                       f"{test.name}, first {args.test_subset}")
    if len(test) == 0:
        raise CLIError(f"--data {data or '(searched)'}: the test split of {test.name} has no images; nothing to "
                       "evaluate: point --data at a complete dataset")
    mean, std, how = _eval_normalization(args, saved, model_name, dataset, train)
    model = build_model(TrainConfig(model=model_name, shortcut=saved.get("shortcut")), test.num_classes)
    _load_eval_weights(args, model, model_name)
    model.to(device)
    loader = Loader(test, args.batch_size, mean, std, train=False, device=device)
    start = time.time()
    loss, correct, seen = evaluate_model(model, loader)
    print(f"{model_name} on {test.name}: test accuracy {correct / seen * 100:.2f}% ({correct}/{seen}), "
          f"loss {loss:.4f}, {time.time() - start:.1f}s (normalize {how})")
    return 0


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
    import math as _math  # noqa: PLC0415

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
    values = sum(_math.prod(t.shape) for t in info.tensors.values())
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

def add_gradflow_parser(subparsers) -> argparse.ArgumentParser:
    """``minires gradflow``: gradient norms through depth, the per-block skip/branch split, plots.

    The options and the run live in :mod:`minires.analysis.cli` (which sets ``func``).
    """
    from .analysis.cli import add_gradflow_parser as add  # noqa: PLC0415

    return add(subparsers)


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
    from . import distributed  # noqa: PLC0415  (imports no MPI by itself)

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        comm = distributed.init(force="--distributed" in argv)  # first, so a failing rank can end the others
    except ImportError as exc:
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
    from . import distributed  # noqa: PLC0415

    try:
        return int(args.func(args) or 0), True
    except KeyboardInterrupt:
        print("minires: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED, False
    except Exception as exc:  # user-facing errors: one line, no traceback
        collective = getattr(exc, "collective", False)
        comm = distributed.get_communicator()
        rank = comm.rank
        where = f" (rank {rank} of {comm.size})" if comm.size > 1 and not collective else ""
        if settings.get("debug"):
            if comm.size == 1:
                raise
            if rank == 0 or not collective:
                import traceback  # noqa: PLC0415

                traceback.print_exc()
        if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
            if rank == 0 or not collective:
                print(f"minires: error{where}: {_describe_os_error(exc)}", file=sys.stderr)
            return EXIT_ERROR, collective
        if not _is_user_error(exc):
            if rank == 0 or not collective:
                print(f"minires: internal error{where}: {type(exc).__name__}: {exc} (set MINIRES_DEBUG=1 for the "
                      "traceback)", file=sys.stderr)
            return 1, collective
        if rank == 0 or not collective:
            print(f"minires: error{where}: {exc}", file=sys.stderr)
        return EXIT_ERROR, collective


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
    from .distributed import ConfigurationMismatch  # noqa: PLC0415
    from .train import TrainingError  # noqa: PLC0415

    return isinstance(exc, (CLIError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
                            TrainingError, DownloadError, UnsafePickleError, ConfigurationMismatch))


if __name__ == "__main__":
    sys.exit(main())
