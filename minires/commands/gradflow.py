"""``minires gradflow``: gradient norms through depth, skip/branch tables and plots.

Hooked into ``minires/cli.py`` with :func:`add_gradflow_parser` and :func:`run_gradflow`;
also runnable alone as ``python -m minires.commands.gradflow``.

Writes to ``--out``:

- ``gradnorms.csv``: ``model, seed, name, kind (param|activation), depth, norm``;
- ``blocks.csv`` and ``blocks.md``: per block, ``||dL/dy||``, ``||dL/dx||``, the skip and
  branch terms, their ratio and cosine, the fraction the post-add ReLU blocks, and the
  check ``max|skip + branch - grad_in| / max|grad_in|``;
- ``summary.csv`` and ``summary.md``: ``||dL/dW conv1|| / ||dL/dW last conv||`` per model
  and seed, with the mean log10 per model;
- ``gradnorm_depth.png`` (activation gradient against depth, log scale, one line per
  model), ``gradnorm_params.png`` (per weight layer), ``skip_branch.png``;
- with ``--jacobian-iters N``: ``jacobian.csv``, per block the spectral norms
  ``||dF/dx||``, ``||dS/dx + dF/dx||`` (``||I + dF/dx||`` for identity shortcuts) and of the
  whole block, by power iteration (forward-mode JVP and VJP).

Under MPI (``mpiexec -n 4 minires gradflow ...``) the (model, seed) runs are spread over
the ranks (:func:`minires.distributed.run_sweep`) and rank 0 writes the same files, with
the same numbers, as one process (bit for bit at the same kernel thread count).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .. import distributed

DEFAULT_MODELS = ["plain20", "resnet20"]


def add_gradflow_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``gradflow`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "gradflow", help="gradient norms through depth and the skip/branch split per block",
        description="Run one forward/backward per model and seed (at initialisation, or from --checkpoint) and "
                    "write gradient norms through depth, the per-block skip/branch table and plots to --out.")
    p.add_argument("--model", nargs="+", default=DEFAULT_MODELS, metavar="NAME",
                   help=f"model names from `minires models` (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch (default 128)")
    p.add_argument("--seeds", type=int, default=1, help="seeds (initialisation and batch) per model (default 1)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--data", default="gaussian",
                   help="'gaussian' (N(0,1) images, random labels; default), 'embedded' (the CIFAR-10 subset "
                        "shipped with minires) or a CIFAR-10 path")
    p.add_argument("--checkpoint", default=None,
                   help="analyse trained weights (model.npz / checkpoint.npz / .pt / .safetensors) instead of "
                        "the initialisation; needs exactly one --model")
    p.add_argument("--shortcut", choices=["A", "B", "C"], default=None, help="shortcut option (model default)")
    p.add_argument("--shortcut-scale", type=float, default=None, help="constant scale of the shortcut (default 1)")
    p.add_argument("--bn-mode", choices=["train", "eval"], default="train",
                   help="BN with batch statistics (train, default) or running statistics (eval)")
    p.add_argument("--num-classes", type=int, default=10, help="classes (default 10)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", default="gradflow", help="output directory (default ./gradflow)")
    p.add_argument("--jacobian-iters", type=int, default=0,
                   help="also estimate each block's ||dF/dx||, ||dS/dx + dF/dx|| and whole-block spectral norms "
                        "by this many power iterations (JVP + VJP) into jacobian.csv (default 0: off)")
    p.add_argument("--jacobian-batch", type=int, default=16,
                   help="images of the batch used for the Jacobian probes (default 16)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run_gradflow)
    return p


def _fail(message: str) -> int:
    if distributed.get_rank() == 0:  # (every rank fails alike: they check the same arguments)
        print(f"minires gradflow: error: {message}", file=sys.stderr)
    return 2


def build_model(name: str, args, seed: int):
    """Create ``name`` with minires.models (seeded), load ``--checkpoint``, set the BN mode."""
    import minires as mr  # noqa: PLC0415
    from .. import models  # noqa: PLC0415

    options = {"shortcut": args.shortcut, "shortcut_scale": args.shortcut_scale}
    mr.manual_seed(seed)
    model = models.create(name, num_classes=args.num_classes, **{k: v for k, v in options.items() if v is not None})
    if args.checkpoint:
        from ..io import load_state_dict  # noqa: PLC0415
        from ..train.weights import load_weights_strict  # noqa: PLC0415

        # every weight of the model from the file, and nothing else (a training checkpoint's "model/" prefix is
        # unwrapped); another architecture's weights are an error naming the first mismatching key
        load_weights_strict(model, load_state_dict(args.checkpoint), args.checkpoint, name)
    if args.device != "cpu":
        model.to(args.device)
    model.train(args.bn_mode == "train")
    return model


def run_gradflow(args) -> int:
    """Run ``minires gradflow`` with parsed ``args``; returns the exit status."""
    from ..analysis.inputs import load_batches  # noqa: PLC0415
    from ..analysis.report import ensure_dir  # noqa: PLC0415

    error = _argument_error(args)
    if error is not None:
        return _fail(error)
    try:
        batches = load_batches(args.data, args.batch_size, range(args.seed, args.seed + args.seeds),
                               args.num_classes)
    except (OSError, ValueError) as exc:
        return _fail(f"--data {args.data}: {exc}")
    comm = distributed.init()
    out = ensure_dir(args.out) if comm.is_writer else None
    try:
        rows = _profile_all(args, batches, comm)
    except _RunFailed as exc:
        return _fail(str(exc))
    if not comm.is_writer:
        return 0
    written = _write_tables(out, rows, args)
    if not args.no_plots:
        written += _write_plots(out, rows, args)
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def _argument_error(args) -> str | None:
    """What is wrong with the options (checked before any data is read), or None."""
    if args.batch_size < 2:
        return f"--batch-size must be >= 2 (BN in train mode needs a batch), got {args.batch_size}"
    if args.seeds < 1:
        return f"--seeds must be >= 1, got {args.seeds}"
    if args.jacobian_iters < 0 or args.jacobian_batch < 2:
        return (f"--jacobian-iters must be >= 0 and --jacobian-batch >= 2, got {args.jacobian_iters} and "
                f"{args.jacobian_batch}")
    if args.checkpoint and len(args.model) != 1:
        return f"--checkpoint needs exactly one --model, got {len(args.model)}: {' '.join(args.model)}"
    if args.checkpoint and not os.path.exists(args.checkpoint):
        return f"--checkpoint {args.checkpoint}: no such file"
    from .. import models  # noqa: PLC0415

    known = set(models.available())
    unknown = [m for m in args.model if m not in known]
    if unknown:
        return f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(sorted(known))}"
    return None


def _profile_all(args, batches: dict, comm) -> dict:
    """Every (model, seed) run, spread over the ranks: the rows of each table (complete on rank 0)."""
    rows = {"norms": [], "blocks": [], "summary": [], "jacobian": []}

    def collect(job, result):
        for table in ("norms", "blocks", "jacobian"):
            rows[table].extend(result[table])
        rows["summary"].append(result["summary"])
        print(result["line"], flush=True)

    jobs = [(name, seed) for name in args.model for seed in batches]
    distributed.run_sweep(jobs, lambda job: _profile_one(*job, batches[job[1]], args), comm, on_result=collect)
    return rows


def _setting(args) -> str:
    """One line naming the batch, data, BN mode, weights and seeds (the tables' and plots' caption)."""
    return (f"batch {args.batch_size}, data {args.data}, BN {args.bn_mode} mode, "
            f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'initialisation'}, "
            f"seeds {args.seed}..{args.seed + args.seeds - 1}")


def _write_tables(out: str, rows: dict, args) -> list:
    """The CSV and Markdown files into ``out``; returns their names."""
    from ..analysis.report import markdown_table, mean_over, write_csv  # noqa: PLC0415

    block_rows, summary_rows = rows["blocks"], rows["summary"]
    write_csv(os.path.join(out, "gradnorms.csv"), rows["norms"], ["model", "seed", "name", "kind", "depth", "norm"])
    write_csv(os.path.join(out, "blocks.csv"), block_rows)
    write_csv(os.path.join(out, "summary.csv"), summary_rows)
    block_cols = ["model", "index", "name", "kind", "shortcut", "norm_grad_out", "norm_grad_in", "norm_skip",
                  "norm_branch", "ratio_branch_skip", "cosine_skip_branch", "blocked_fraction", "identity_error"]
    block_means = mean_over(block_rows, ["model", "index"], block_cols[5:])
    setting = _setting(args)
    with open(os.path.join(out, "blocks.md"), "w") as f:
        f.write(f"# Skip and branch terms per block\n\n{setting}; mean over seeds. For a block "
                "y = sigma(F(x) + S(x)) and g = dL/dy * sigma': skip = S^T g, branch = (dF/dx)^T g, "
                "grad_in = skip + branch (identity_error is the relative mismatch).\n\n")
        f.write(markdown_table(block_means, block_cols,
                               ["model", "block", "name", "kind", "shortcut", "‖dL/dy‖", "‖dL/dx‖", "‖skip‖",
                                "‖branch‖", "‖branch‖/‖skip‖", "cos", "ReLU-blocked", "identity err"]))
    per_model = mean_over(summary_rows, ["model"], ["log10_ratio", "loss", "seconds"])
    for row in per_model:
        vals = [r["log10_ratio"] for r in summary_rows if r["model"] == row["model"]]
        row["std_log10_ratio"] = float(np.std(vals))
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(f"# Gradient ratio ‖dL/dW first conv‖ / ‖dL/dW last conv‖\n\n{setting}.\n\n")
        f.write(markdown_table(per_model, ["model", "n", "log10_ratio", "std_log10_ratio", "loss", "seconds"],
                               ["model", "seeds", "mean log10 ratio", "std", "loss", "s / run"]))
        f.write("\nPer seed:\n\n")
        f.write(markdown_table(summary_rows, ["model", "seed", "first_norm", "last_norm", "log10_ratio",
                                              "max_identity_error"]))
    written = ["gradnorms.csv", "blocks.csv", "blocks.md", "summary.csv", "summary.md"]
    if rows["jacobian"]:
        write_csv(os.path.join(out, "jacobian.csv"), rows["jacobian"])
        written.append("jacobian.csv")
    return written


def _write_plots(out: str, rows: dict, args) -> list:
    """The PNG figures into ``out`` (those matplotlib could draw); returns their names."""
    from ..analysis.report import plot_depth_profile, plot_skip_branch  # noqa: PLC0415

    written = []
    title = _setting(args)[:70]
    for fn, src, fname, extra in ((plot_depth_profile, rows["norms"], "gradnorm_depth.png", {"kind": "activation"}),
                                  (plot_depth_profile, rows["norms"], "gradnorm_params.png", {"kind": "param"}),
                                  (plot_skip_branch, rows["blocks"], "skip_branch.png", {})):
        if fn(src, os.path.join(out, fname), title=title, **extra):
            written.append(fname)
    return written


class _RunFailed(Exception):
    """One (model, seed) run could not start (its message names the model)."""


def _profile_one(name: str, seed: int, batch, args) -> dict:
    """One model and seed: the rows of every output table and the progress line."""
    from ..autograd import Tensor  # noqa: PLC0415
    from ..backend import to_device  # noqa: PLC0415
    from ..analysis.gradnorms import gradient_profile  # noqa: PLC0415

    start = time.perf_counter()
    try:
        model = build_model(name, args, seed)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _RunFailed(f"{name}: {exc}") from None
    x, y = (to_device(a, args.device) for a in batch)  # (already there on the CPU: the same arrays)
    profile = gradient_profile(model, Tensor(x), Tensor(y))
    conv = profile["conv_ratio"]
    rows = {"norms": [{"model": name, "seed": seed, **row} for row in profile["gradnorms"]],
            "blocks": [{"model": name, "seed": seed, **rec.as_row()} for rec in profile["blocks"]],
            "summary": {"model": name, "seed": seed, "loss": profile["loss"],
                        **{k: conv[k] for k in ("first", "last", "first_norm", "last_norm", "ratio", "log10_ratio")},
                        "blocks": len(profile["blocks"]),
                        "max_identity_error": max(r.identity_error for r in profile["blocks"]),
                        "seconds": time.perf_counter() - start},
            "jacobian": []}
    if args.jacobian_iters:
        from ..analysis.jacobian import block_jacobian_norms  # noqa: PLC0415

        for j in block_jacobian_norms(model, Tensor(x[:args.jacobian_batch]), iters=args.jacobian_iters):
            rows["jacobian"].append({"model": name, "seed": seed, "name": j.name, "kind": j.kind, "branch": j.branch,
                                     "residual": j.residual, "block": j.block, "iterations": max(j.iterations)})
    rows["line"] = (f"{name} seed {seed}: loss {profile['loss']:.4f}, log10 ||dL/dW {conv['first']}|| / "
                    f"||dL/dW {conv['last']}|| = {conv['log10_ratio']:.3f} ({time.perf_counter() - start:.1f} s)")
    return rows


def main(argv=None) -> int:
    """Standalone entry point: ``python -m minires.commands.gradflow [gradflow options]``."""
    parser = argparse.ArgumentParser(prog="minires")
    sub = parser.add_subparsers(dest="command", required=True)
    add_gradflow_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "gradflow":
        argv = ["gradflow"] + argv
    return run_gradflow(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
