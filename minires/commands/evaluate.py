"""``minires eval``: the accuracy of saved weights (``OUT/model.npz`` or a third-party
checkpoint) on a CIFAR test split, with the normalisation and model taken from the run's
``config.json`` where the flags leave them open."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from ..backend import parse_device
from .args import NORMALIZE_HELP, CLIError, check_device, device_arg, int_at_least, normalize_arg


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
    p.add_argument("--normalize", type=normalize_arg, default=None,
                   help=NORMALIZE_HELP + " (default: config.json's, else train)")
    p.add_argument("--key", default=None, help="the checkpoint entry holding the state dict (default: the top "
                                               "level, or its one 'state_dict'/'model'/... entry)")
    p.add_argument("--strip-prefix", default="module.", help="removed from keys that start with it "
                                                             "(default 'module.', as DataParallel adds; '' for none)")
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                   help="rename keys starting with the dotted prefix OLD (repeatable), e.g. linear=fc")
    p.add_argument("--device", type=device_arg, default=None, help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int_at_least(1), default=250)
    p.add_argument("--test-subset", type=int_at_least(0), default=0, help="use the first N test images (0: all)")
    p.set_defaults(func=run_eval)
    return p


def _eval_normalization(args, saved: dict, dataset: str, train):
    """``(mean, std, description)``: --normalize, else config.json's recorded values, else the training split's."""
    from ..data import normalization_stats  # noqa: PLC0415

    if args.normalize is None and "normalize_mean" in saved and args.model in (None, saved.get("model")):
        mean, std = np.asarray(saved["normalize_mean"], np.float32), np.asarray(saved["normalize_std"], np.float32)
        return mean, std, f"{saved.get('normalize', 'train')} (config.json)"
    choice = args.normalize or "train"
    return (*normalization_stats(choice, dataset, train.images), choice)


def _load_eval_weights(args, model, model_name: str) -> None:
    from .. import io  # noqa: PLC0415
    from ..train.weights import WeightsMismatchError, first_mismatch, load_weights_strict  # noqa: PLC0415

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
    from ..data import Loader, load_dataset  # noqa: PLC0415
    from ..train import TrainConfig, evaluate_model  # noqa: PLC0415
    from ..train.run_dir import read_folder_config  # noqa: PLC0415
    from ..train.setup import build_model  # noqa: PLC0415

    if not os.path.isfile(args.weights):
        raise CLIError(f"--weights {args.weights}: no such file")
    saved = read_folder_config(os.path.dirname(os.path.abspath(args.weights)))  # the run's, beside the weights
    model_name = args.model or saved.get("model")
    if model_name is None:
        raise CLIError("--model is required (no config.json beside the weights to take it from)")
    dataset = args.dataset or saved.get("dataset", "cifar10")
    data = args.data if args.data is not None else saved.get("data")
    device = parse_device(args.device)
    check_device(device)
    train, test = load_dataset(data, dataset)
    test = test.first(args.test_subset)
    if len(test) == 0:
        raise CLIError(f"--data {data or '(searched)'}: the test split of {test.name} has no images; nothing to "
                       "evaluate: point --data at a complete dataset")
    mean, std, how = _eval_normalization(args, saved, dataset, train)
    model = build_model(TrainConfig(model=model_name, shortcut=saved.get("shortcut")), test.num_classes)
    _load_eval_weights(args, model, model_name)
    model.to(device)
    loader = Loader(test, args.batch_size, mean, std, train=False, device=device)
    start = time.time()
    loss, correct, seen = evaluate_model(model, loader)
    print(f"{model_name} on {test.name}: test accuracy {correct / seen * 100:.2f}% ({correct}/{seen}), "
          f"loss {loss:.4f}, {time.time() - start:.1f}s (normalize {how})")
    return 0
