"""Figures of training runs (matplotlib, an optional extra): what ``minires plot`` draws.

From one or several run folders (``config.json``, ``metrics.jsonl`` and, with
``--track-gradients``, ``gradients.jsonl``), one PNG per figure:

- ``learning_curves.png``: loss and accuracy per epoch, every run in its own colour,
  test solid and train dashed, each run named at the end of its line;
- ``branch_skip_ratio.png``: one heatmap per run, block (first at the top) by step, of
  ``log10`` of the tracked ratio (``||branch|| / ||skip||``; plain blocks
  ``||branch|| / ||g||``, see :mod:`minires.analysis.tracking`), one shared colour scale;
- ``grad_norms.png`` and ``update_ratios.png``: the gradient norm and the
  update-to-weight ratio of every convolution and linear weight over the steps, one panel
  per run on shared axes, each line coloured by its relative depth.

The trainer's own ``curves.png`` is the learning-curve figure of its single run.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .checkpoint import atomic_write
from .jsonl import read_jsonl
from .run_dir import read_folder_config

MATPLOTLIB_HINT = "pip install 'minires[plot]' (or pip install matplotlib)"


@dataclass
class RunRecords:
    """What a run folder holds, read back.

    Attributes:
        label: the run's name in the figures (the folder name unless given).
        metrics: the ``metrics.jsonl`` records (one per epoch).
        gradients: the ``gradients.jsonl`` records (one per tracked step).
        config: ``config.json`` (empty when absent).
    """

    label: str
    metrics: list = field(default_factory=list)
    gradients: list = field(default_factory=list)
    config: dict = field(default_factory=dict)


def load_run(folder: str, label: str | None = None) -> RunRecords:
    """Read a ``minires train`` output folder.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
        ValueError: it holds neither ``metrics.jsonl`` nor ``gradients.jsonl`` records.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such run folder (give the --out folder of `minires train`)")
    config = read_folder_config(folder)
    run = RunRecords(label or os.path.basename(os.path.normpath(os.path.abspath(folder))),
                     read_jsonl(os.path.join(folder, "metrics.jsonl")),
                     read_jsonl(os.path.join(folder, "gradients.jsonl")), config)
    if not run.metrics and not run.gradients:
        raise ValueError(f"{folder}: no records in metrics.jsonl or gradients.jsonl yet (is it a `minires train` "
                         "output folder? gradients.jsonl needs --track-gradients N)")
    return run


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise ImportError(f"plotting needs matplotlib: {MATPLOTLIB_HINT}") from None
    return plt


def plot_runs(runs: list, out: str, prefix: str = "") -> list:
    """Write every figure the runs have data for into ``out``; returns the paths written.

    Args:
        runs: :class:`RunRecords` (from :func:`load_run`), drawn in this order.
        out: the folder for the PNG files (created if needed).
        prefix: put before each file name (``learning_curves.png``, ``branch_skip_ratio.png``,
            ``grad_norms.png``, ``update_ratios.png``).
    """
    os.makedirs(out, exist_ok=True)
    written = []
    if any(r.metrics for r in runs):
        written.append(plot_learning_curves(runs, os.path.join(out, f"{prefix}learning_curves.png")))
    if any(r.gradients and r.gradients[0]["blocks"] for r in runs):
        written.append(plot_ratio_heatmaps(runs, os.path.join(out, f"{prefix}branch_skip_ratio.png")))
    if any(r.gradients for r in runs):
        written.append(plot_layer_series(runs, "grad_norm", os.path.join(out, f"{prefix}grad_norms.png")))
        written.append(plot_layer_series(runs, "update_ratio", os.path.join(out, f"{prefix}update_ratios.png")))
    return written


def plot_curves(history: list, path: str) -> str | None:
    """The trainer's ``curves.png``: :func:`plot_learning_curves` of one run's epoch records.

    Returns:
        ``path``, or ``None`` when matplotlib is missing or there is nothing to plot.
    """
    if not history:
        return None
    try:
        return plot_learning_curves([RunRecords("", metrics=history)], path)
    except OSError:  # the file cannot be written (disk full, permissions): the caller reports it
        raise
    except Exception:  # matplotlib missing or unusable: the curves are optional, the run's results are not
        return None


def _save(plt, fig, path: str) -> str:
    """Write the PNG atomically (at matplotlib's ``savefig.dpi``, 100 by default) and close the figure."""
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return path


def _value(x) -> float:
    return float("nan") if x is None else float(x)


def plot_learning_curves(runs: list, path: str) -> str:
    """Loss and accuracy per epoch of every run: test solid, train dashed, one colour per run."""
    plt = pyplot()
    runs = [r for r in runs if r.metrics]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    ends = {0: [], 1: []}
    for run, color in zip(runs, itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"]))):
        epochs = [r["epoch"] for r in run.metrics]
        for i, key, scale in ((0, "loss", 1), (1, "acc", 100)):
            axes[i].plot(epochs, [scale * r[f"train_{key}"] for r in run.metrics], "--", color=color, lw=1.2)
            axes[i].plot(epochs, [scale * r[f"test_{key}"] for r in run.metrics], "o-", color=color, lw=1.8, ms=3)
            ends[i].append((epochs[-1], scale * run.metrics[-1][f"test_{key}"], run.label, color))
    axes[0].set_yscale("log")
    _plain_log_labels(axes[0])
    axes[0].set_ylabel("cross-entropy")
    axes[1].set_ylabel("accuracy (%)")
    for i, ax in enumerate(axes):
        ax.set_xlabel("epoch")
        _integer_ticks(ax)
        ax.grid(True, which="both", alpha=0.3)
        ax.margins(x=0.15)
        _label_line_ends(ax, [e for e in ends[i] if e[2]])
    fig.suptitle("solid: test, dashed: train" + ("" if len(runs) < 2 else "; runs named at their last epoch"),
                 fontsize=10)
    return _save(plt, fig, path)


def _plain_log_labels(ax) -> None:
    """Log-scale y ticks written as plain numbers (2, 3, 10), not powers of ten."""
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415

    label = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(label)
    ax.yaxis.set_minor_formatter(label)


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _label_line_ends(ax, ends: list, gap_px: float = 12.0) -> None:
    """Write each ``(x, y, text, colour)`` right of its point, moved apart vertically where they would overlap."""
    ax.get_ylim()  # settle the autoscaled limits before converting to pixels
    points = sorted((ax.transData.transform((x, y))[1], x, y, text, color) for x, y, text, color in ends)
    placed = []
    for py, x, y, text, color in points:
        py = max(py, placed[-1] + gap_px) if placed else py
        placed.append(py)
        shift = py - ax.transData.transform((x, y))[1]
        ax.annotate(text, (x, y), color=color, xytext=(5, shift), textcoords="offset pixels", va="center",
                    fontsize=9)


def _block_matrix(run: RunRecords):
    """``(steps, block names, rows of log10 ratio)`` of a run's tracked steps."""
    steps = [r["step"] for r in run.gradients]
    names = list(dict.fromkeys(b["name"] for r in run.gradients for b in r["blocks"]))
    index = {n: i for i, n in enumerate(names)}
    rows = [[float("nan")] * len(steps) for _ in names]
    for j, record in enumerate(run.gradients):
        for b in record["blocks"]:
            ratio = _value(b.get("ratio"))
            rows[index[b["name"]]][j] = math.log10(ratio) if ratio > 0 else float("nan")
    return steps, names, rows


def _edges(steps: list) -> list:
    if len(steps) == 1:
        return [steps[0] - 0.5, steps[0] + 0.5]
    mids = [(a + b) / 2 for a, b in zip(steps, steps[1:])]
    return [2 * steps[0] - mids[0]] + mids + [2 * steps[-1] - mids[-1]]


def plot_ratio_heatmaps(runs: list, path: str) -> str:
    """One heatmap per run: block (first at the top) by step, colour ``log10`` ratio, shared scale."""
    plt = pyplot()
    runs = [r for r in runs if r.gradients and r.gradients[0]["blocks"]]
    if not runs:
        raise ValueError("no run has residual or plain blocks in its gradients.jsonl: nothing for the heatmap")
    data = [_block_matrix(r) for r in runs]
    finite = [abs(v) for _, _, rows in data for row in rows for v in row if math.isfinite(v)]
    limit = min(max(max(finite, default=0.5), 0.5), 3.0)
    height = 1.6 + 0.16 * max(len(names) for _, names, _ in data)
    fig, axes = plt.subplots(1, len(runs), figsize=(1.0 + 4.2 * len(runs), height), squeeze=False,
                             layout="constrained")
    for ax, run, (steps, names, rows) in zip(axes[0], runs, data):
        mesh = ax.pcolormesh(_edges(steps), np.arange(len(names) + 1) - 0.5, np.ma.masked_invalid(np.array(rows)),
                             cmap="RdBu_r", vmin=-limit, vmax=limit, shading="flat")
        every = max(1, len(names) // 28)
        ax.set_yticks(range(0, len(names), every))
        ax.set_yticklabels(names[::every], fontsize=7)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_xlabel("step")
        _integer_ticks(ax)
        ax.set_title(run.label, fontsize=10)
    bar = fig.colorbar(mesh, ax=list(axes[0]), fraction=0.04 if len(runs) > 1 else 0.08)
    bar.set_label("log10 ||branch|| / ||skip||\n(plain block: ||branch|| / ||grad at sum||)", fontsize=8)
    fig.suptitle("each block's input gradient: red, the branch term outweighs the skip term; blue, the skip "
                 "term dominates\n(plain blocks, no skip: red, the block amplifies the gradient; blue, it "
                 "shrinks it)", fontsize=9)
    return _save(plt, fig, path)


LAYER_SERIES = {"grad_norm": ("||dL/dW|| per weight layer", "gradient norm"),
                "update_ratio": ("update-to-weight ratio ||dW|| / ||W|| per weight layer", "update ratio")}


def plot_layer_series(runs: list, key: str, path: str) -> str:
    """``key`` (``'grad_norm'`` or ``'update_ratio'``) of each conv/linear weight over steps; colour = depth."""
    from matplotlib import cm, colors  # noqa: PLC0415

    plt = pyplot()
    title, ylabel = LAYER_SERIES[key]
    runs = [r for r in runs if r.gradients]
    fig, axes = plt.subplots(1, len(runs), figsize=(1.0 + 4.2 * len(runs), 3.8), squeeze=False, sharey=True,
                             layout="constrained")
    cmap = plt.get_cmap("viridis")
    for ax, run in zip(axes[0], runs):
        steps = [r["step"] for r in run.gradients]
        by_name = [{p["name"]: p for p in r["params"]} for r in run.gradients]
        weights = [p["name"] for p in run.gradients[0]["params"] if len(p.get("shape", [0, 0])) >= 2]
        for depth, name in enumerate(weights):
            values = [_value(params[name][key]) if name in params else float("nan") for params in by_name]
            ax.plot(steps, [v if v > 0 else float("nan") for v in values], lw=1.0,
                    color=cmap(depth / max(len(weights) - 1, 1)))
        ax.set_yscale("log")
        ax.set_xlabel("step")
        _integer_ticks(ax)
        ax.set_title(run.label, fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
    axes[0][0].set_ylabel(ylabel)
    bar = fig.colorbar(cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap=cmap), ax=list(axes[0]),
                       fraction=0.04 if len(runs) > 1 else 0.08)
    bar.set_label("depth: first conv (0) to classifier (1)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)
