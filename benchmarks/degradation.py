"""The degradation experiment (He et al. 2015, Fig. 1 and 6): plain against residual nets.

Trains plain-20, plain-56, ResNet-20 and ResNet-56 under one recipe and draws their
training-error curves (solid) and test-error curves (dashed) on one plot. He et al. find
the deeper plain net trains *worse* than the shallower one (degradation), while the
deeper ResNet trains better.

The default is the CPU-sized version (a CIFAR-10 subset, few epochs; sized for about 30
minutes on 2 CPU cores); ``benchmarks/degradation_gpu.py`` runs the full recipe on a GPU.

Writes ``OUT/degradation.csv`` (one row per logged interval), ``degradation.md`` and
``degradation.png``. With ``--track-gradients N`` (default 5) every model's training also
records its gradient flow every N steps (:class:`minires.analysis.GradientTracker`) into
``OUT/degradation_runs/MODEL/gradients.jsonl`` and draws, for all models side by side,
``degradation_branch_skip_ratio.png`` (block by step), ``degradation_grad_norms.png`` and
``degradation_update_ratios.png`` (per weight layer over steps): why the plain net
stalls, not only that it does (``minires plot OUT/degradation_runs/*`` redraws them).

Usage::

    python benchmarks/degradation.py                          # CPU-sized
    python benchmarks/degradation.py --data PATH --train-subset 0 --epochs 164 --device cuda  # full
    mpiexec -n 2 python benchmarks/degradation.py             # the models spread over 2 processes

Under MPI each rank trains some of the models (balanced by parameter count) and rank 0
writes the rows after each epoch round in the order one process writes them; a model's
``gradients.jsonl`` is written by the rank that trains it (rank 0 draws the figures from
the files it can read: all of them on a shared file system).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import minires as mr  # noqa: E402
import minires.functional as F  # noqa: E402
from minires import distributed  # noqa: E402
from minires.analysis import GradientTracker, tracked_step  # noqa: E402
from minires.models import create  # noqa: E402
from minires.analysis.report import markdown_table, pyplot  # noqa: E402
from minires.backend import as_numpy, synchronize  # noqa: E402
from minires.data import Loader, channel_stats, load_dataset  # noqa: E402
from minires.optim import SGD  # noqa: E402
from minires.train.jsonl import append_jsonl  # noqa: E402
from minires.train.plot import load_run, plot_runs  # noqa: E402

FIELDS = ["model", "epoch", "step", "images", "lr", "train_loss", "train_err", "test_loss", "test_err", "seconds"]


def subset(dataset, n, seed):
    """The first ``n`` images of a seeded, class-balanced shuffle (all if ``n`` is 0 or too big)."""
    from minires.data import Dataset  # noqa: PLC0415

    if not n or n >= len(dataset):
        return dataset
    rng = np.random.default_rng(seed)
    per_class = n // dataset.num_classes
    idx = np.concatenate([rng.permutation(np.flatnonzero(dataset.labels == c))[:per_class]
                          for c in range(dataset.num_classes)])
    idx = rng.permutation(idx)
    return Dataset(dataset.images[idx], dataset.labels[idx], dataset.classes, f"{dataset.name} subset {len(idx)}")


def lr_at(step, total, base, schedule, warmup):
    """Learning rate of ``step``: 'paper' (/10 at 50% and 75%) or 'cosine', linear warm-up from 0.1x."""
    if step < warmup:
        return base * (0.1 + 0.9 * step / max(1, warmup))
    if schedule == "paper":
        return base * (0.1 if step >= 0.5 * total else 1.0) * (0.1 if step >= 0.75 * total else 1.0)
    if schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return base


def evaluate(model, loader):
    model.eval()
    loss_sum, wrong, count = 0.0, 0, 0
    with mr.no_grad():
        for _, x, y in loader.epoch(0):
            logits = model(mr.Tensor(x))
            loss_sum += float(F.cross_entropy(logits, mr.Tensor(y)).item()) * len(y)
            wrong += int((as_numpy(logits.data).argmax(1) != as_numpy(y)).sum())
            count += len(y)
    model.train()
    return loss_sum / count, wrong / count


class ModelRun:
    """One model's training state, advanced an epoch at a time (so the models can take turns)."""

    def __init__(self, name, train_set, test_set, args, writer):
        mr.manual_seed(args.seed)
        self.name, self.args, self.writer = name, args, writer
        self.model = create(name)
        if args.device != "cpu":
            self.model.to(args.device)
        self.model.train()
        mean, std = channel_stats(train_set.images)
        self.train_loader = Loader(train_set, args.batch_size, mean, std, train=not args.no_augment,
                                   device=args.device, seed=args.seed, drop_last=True)
        self.test_loader = Loader(test_set, 500, mean, std, train=False, device=args.device)
        self.opt = SGD(self.model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
        self.steps_per_epoch = len(self.train_loader)
        self.total = self.steps_per_epoch * args.epochs
        n_logs = max(1, min(args.logs_per_epoch, self.steps_per_epoch))
        self.log_points = {round(k * self.steps_per_epoch / n_logs) for k in range(1, n_logs + 1)}
        self.step, self.seconds, self.rows, self.failed = 0, 0.0, [], False
        self.tracker = GradientTracker(self.model, args.track_gradients) if args.track_gradients else None
        self.gradients_path = os.path.join(runs_folder(args), name, "gradients.jsonl")
        if self.tracker is not None:
            os.makedirs(os.path.dirname(self.gradients_path), exist_ok=True)
            open(self.gradients_path, "w").close()  # a new experiment starts a new file

    def run_epoch(self, epoch):
        """Train one epoch, log, evaluate at its end; returns the seconds it took."""
        args, model = self.args, self.model
        start = time.perf_counter()
        loss_acc, wrong_acc, seen = 0.0, 0, 0
        for i, x, y in self.train_loader.epoch(epoch):
            lr = lr_at(self.step, self.total, args.lr, args.schedule, args.warmup_steps)
            for group in self.opt.param_groups:
                group["lr"] = lr
            with tracked_step(self.tracker, self.step) as tracked:
                logits = model(mr.Tensor(x))
                loss = F.cross_entropy(logits, mr.Tensor(y))
                self.opt.zero_grad()
                loss.backward()
                if tracked.active:
                    tracked.measure(epoch=epoch + 1, loss=float(loss.item()), lr=lr)
                self.opt.step()
            if tracked.record is not None:
                append_jsonl(self.gradients_path, tracked.record)
            self.step += 1
            value = float(loss.item())
            if not math.isfinite(value):
                print(f"{self.name}: non-finite loss at step {self.step}; stopping this model", flush=True)
                self.failed = True
                break
            loss_acc += value * len(y)
            wrong_acc += int((as_numpy(logits.data).argmax(1) != as_numpy(y)).sum())
            seen += len(y)
            last_of_epoch = i == self.steps_per_epoch - 1
            if (i + 1) in self.log_points or last_of_epoch:
                test_loss = test_err = float("nan")
                if last_of_epoch:
                    test_loss, test_err = evaluate(model, self.test_loader)
                synchronize(args.device)
                elapsed = self.seconds + time.perf_counter() - start
                row = {"model": self.name, "epoch": epoch + (i + 1) / self.steps_per_epoch, "step": self.step,
                       "images": self.step * args.batch_size, "lr": lr, "train_loss": loss_acc / seen,
                       "train_err": wrong_acc / seen, "test_loss": test_loss, "test_err": test_err,
                       "seconds": elapsed}
                if self.writer is not None:
                    self.writer(row)
                self.rows.append(row)
                print(f"{self.name} epoch {row['epoch']:.2f} step {self.step}/{self.total}: train err "
                      f"{row['train_err']:.3f} loss {row['train_loss']:.3f}"
                      + (f", test err {test_err:.3f}" if last_of_epoch else "") + f" ({elapsed:.0f} s)", flush=True)
                loss_acc, wrong_acc, seen = 0.0, 0, 0
        took = time.perf_counter() - start
        self.seconds += took
        return took


def per_epoch(rows):
    """Rows merged per whole epoch: training error and loss weighted by the images of each interval."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        images_before = 0
        acc = {}
        for r in (r for r in rows if r["model"] == model):
            n = r["images"] - images_before
            images_before = r["images"]
            epoch = math.ceil(r["epoch"] - 1e-9)
            a = acc.setdefault(epoch, {"model": model, "epoch": epoch, "n": 0, "err": 0.0, "loss": 0.0,
                                       "test_err": float("nan"), "seconds": 0.0})
            a["n"] += n
            a["err"] += r["train_err"] * n
            a["loss"] += r["train_loss"] * n
            a["seconds"] = r["seconds"]
            if math.isfinite(r["test_err"]):
                a["test_err"] = r["test_err"]
        for a in acc.values():
            out.append({"model": model, "epoch": a["epoch"], "train_err": a["err"] / a["n"],
                        "train_loss": a["loss"] / a["n"], "test_err": a["test_err"], "seconds": a["seconds"]})
    return out


def runs_folder(args):
    """``OUT/TAG_runs``: one folder per model with its ``gradients.jsonl``."""
    return os.path.join(args.out, f"{args.tag}_runs")


def plot_gradient_flow(models, args):
    """The gradient-flow figures of the models that have a ``gradients.jsonl``; returns their paths."""
    runs = []
    for model in models:
        folder = os.path.join(runs_folder(args), model)
        if os.path.isfile(os.path.join(folder, "gradients.jsonl")):
            try:
                runs.append(load_run(folder, model))
            except ValueError:  # an empty file: the model failed before its first record
                continue
    if not runs or pyplot() is None:
        return []
    return plot_runs(runs, args.out, prefix=f"{args.tag}_")  # (these folders hold no metrics.jsonl)


def read_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in FIELDS[1:]:
            r[k] = float(r[k])
    return rows


def plot(rows, path, title):
    """Training error per epoch (solid, mean over the epoch's batches) and test error (dashed), one plot."""
    plt = pyplot()
    if plt is None:
        return None
    rows = per_epoch(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=80)
    colors = {"plain20": "tab:orange", "plain56": "tab:red", "resnet20": "tab:cyan", "resnet56": "tab:blue"}
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        c = colors.get(model)
        ax.plot([r["epoch"] for r in rs], [100 * r["train_err"] for r in rs], "-", color=c, lw=1.2,
                label=f"{model} train")
        te = [r for r in rs if math.isfinite(r["test_err"])]
        ax.plot([r["epoch"] for r in te], [100 * r["test_err"] for r in te], "--o", color=c, lw=1.8, ms=3,
                label=f"{model} test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["plain20", "plain56", "resnet20", "resnet56"])
    p.add_argument("--data", default="embedded")
    p.add_argument("--train-subset", type=int, default=0, help="train images (0: all of --data)")
    p.add_argument("--test-subset", type=int, default=0, help="test images (0: all)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--schedule", choices=["paper", "cosine", "constant"], default="cosine")
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--logs-per-epoch", type=int, default=2)
    p.add_argument("--track-gradients", type=int, default=5, metavar="N",
                   help="record each model's gradient flow every N steps (0: off; default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--time-budget", type=float, default=float("inf"),
                   help="total seconds: start no epoch round that would end past it (the schedule keeps --epochs)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--tag", default="degradation", help="file name stem of the outputs")
    p.add_argument("--replot", action="store_true",
                   help="rebuild the PNG and Markdown from OUT/TAG.csv (same flags as the run) without training")
    args = p.parse_args(argv)
    comm = distributed.init()
    with distributed.abort_on_error(comm):  # one rank failing ends the others
        _main(args, comm)


def _main(args, comm):
    if comm.is_writer:
        os.makedirs(args.out, exist_ok=True)
    train_set, test_set = load_dataset(args.data)
    train_set = subset(train_set, args.train_subset, args.seed)
    test_set = subset(test_set, args.test_subset, args.seed + 1)
    csv_path = os.path.join(args.out, f"{args.tag}.csv")
    setting = (f"{len(train_set)} train / {len(test_set)} test images ({train_set.name.split(' (')[0]}), "
               f"{args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr} ({args.schedule}, "
               f"{args.warmup_steps} warm-up steps), momentum {args.momentum}, wd {args.weight_decay}, "
               f"{'no augmentation' if args.no_augment else 'crop+flip'}, seed {args.seed}, device {args.device}")
    if args.replot:
        rows = read_csv(csv_path)
        epochs_done = min(max(r["epoch"] for r in rows if r["model"] == m) for m in {r["model"] for r in rows})
        minutes = sum(max(r["seconds"] for r in rows if r["model"] == m) for m in {r["model"] for r in rows}) / 60
        write_summary(rows, args, setting + f" (ran {epochs_done:g} epochs in {minutes:.1f} min; summary rebuilt "
                      "from the CSV)")
        return
    if comm.is_writer:
        with open(csv_path, "w", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writeheader()
        print(setting, flush=True)

    def writer(row):
        with open(csv_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writerow(row)

    owners = owner_ranks(args.models, comm.size)
    runs = {i: ModelRun(name, train_set, test_set, args, writer if comm.size == 1 else None)
            for i, name in enumerate(args.models) if owners[i] == comm.rank}
    start, epochs_done = time.perf_counter(), 0
    for epoch in range(args.epochs):  # the models take turns, one epoch each, so all get as many epochs
        round_start = time.perf_counter()
        new_rows = {}
        for i, run in runs.items():
            if not run.failed:
                before = len(run.rows)
                run.run_epoch(epoch)
                new_rows[i] = run.rows[before:]
        if comm.size > 1:  # rank 0 writes the round's rows in model order, as one process does
            for rows in merge_by_model(comm.gather_object(new_rows)):
                for row in rows:
                    writer(row)
        epochs_done = epoch + 1
        round_time = time.perf_counter() - round_start
        out_of_time = time.perf_counter() - start + round_time > args.time_budget and epoch + 1 < args.epochs
        if comm.bcast_object(out_of_time):
            if comm.is_writer:
                print(f"time budget of {args.time_budget:.0f} s: stopping after {epoch + 1} of {args.epochs} epochs",
                      flush=True)
            break
    everything = merge_by_model(comm.gather_object({i: run.rows for i, run in runs.items()}))
    if comm.is_writer:
        setting += f" (ran {epochs_done} epochs in {(time.perf_counter() - start) / 60:.1f} min)"
        write_summary([row for rows in everything for row in rows], args, setting)


def owner_ranks(models, size):
    """The rank that trains each model: the bigger models spread first (by parameter count)."""
    if size == 1:
        return [0] * len(models)
    return distributed.balance([sum(p.data.size for p in create(name).parameters()) for name in models], size)


def merge_by_model(parts):
    """Rank 0: the per-model row lists of every rank in model order (``[]`` elsewhere)."""
    if parts is None:
        return []
    merged = {i: rows for part in parts for i, rows in part.items()}
    return [merged[i] for i in sorted(merged)]


def write_summary(all_rows, args, setting):
    """degradation.png and degradation.md from the logged rows."""
    plot(all_rows, os.path.join(args.out, f"{args.tag}.png"), "degradation: " + setting[:90])
    flow = plot_gradient_flow(list(dict.fromkeys(r["model"] for r in all_rows)), args)
    table = []
    epochs = per_epoch(all_rows)
    for model in dict.fromkeys(r["model"] for r in epochs):
        rs = [r for r in epochs if r["model"] == model]
        te = [r for r in rs if math.isfinite(r["test_err"])]
        table.append({"model": model, "epochs run": rs[-1]["epoch"],
                      "final train err %": 100 * rs[-1]["train_err"],
                      "best test err %": 100 * min(r["test_err"] for r in te) if te else float("nan"),
                      "final test err %": 100 * te[-1]["test_err"] if te else float("nan"),
                      "minutes": rs[-1]["seconds"] / 60})
    with open(os.path.join(args.out, f"{args.tag}.md"), "w") as f:
        f.write(f"# Degradation experiment ({args.tag})\n\n{setting}.\n\nTraining error: the error over all "
                f"batches of the epoch as they were trained (train mode, augmented); test error at each epoch end "
                f"(eval mode); `final` is the last epoch. Per-epoch values:\n\n{markdown_table(table)}\n"
                f"{markdown_table(epochs, ['model', 'epoch', 'train_err', 'train_loss', 'test_err', 'seconds'])}")
        if flow:
            f.write("\nGradient flow during training (every model side by side; `minires plot "
                    f"{runs_folder(args)}/*` redraws them): " + ", ".join(f"`{os.path.basename(p)}`" for p in flow)
                    + ". The heatmap's colour is log10 ||branch term|| / ||skip term|| of each block's input "
                    "gradient (plain blocks: ||input gradient|| / ||gradient at the block's output sum||, "
                    "below 0 where the block shrinks the gradient it passes down).\n")
    print(markdown_table(table))


if __name__ == "__main__":
    main()
