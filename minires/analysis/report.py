"""Writing analysis results: CSV, Markdown tables and (when matplotlib is installed) PNG plots."""

from __future__ import annotations

import csv
import math
import os


def write_csv(path, rows: list, columns: list | None = None) -> str:
    """Write ``rows`` (dicts) to ``path`` as CSV; columns default to the first row's keys."""
    if not rows:
        raise ValueError(f"write_csv: no rows to write to {path}")
    columns = columns or list(rows[0].keys())
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt_csv(row.get(k)) for k in columns})
    return path


def _fmt_csv(value):
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return value


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(rows: list, columns: list | None = None, headers: list | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (dicts)."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0].keys())
    headers = headers or columns
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def mean_over(rows: list, keys: list, values: list) -> list:
    """Average ``values`` columns over rows sharing ``keys`` (order of first appearance kept)."""
    groups: dict = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, group in groups.items():
        merged = dict(zip(keys, key))
        for k in group[0]:
            if k not in merged and k not in values:
                merged[k] = group[0][k]
        for v in values:
            vals = [r[v] for r in group if isinstance(r.get(v), (int, float)) and math.isfinite(r[v])]
            merged[v] = sum(vals) / len(vals) if vals else float("nan")
        merged["n"] = len(group)
        out.append(merged)
    return out


def pyplot():
    """``matplotlib.pyplot`` with the Agg backend, or ``None`` (with a message) if missing."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib is not installed: skipping the PNG plots (pip install matplotlib)")
        return None
    return plt


def plot_depth_profile(rows: list, path, kind: str = "activation", title: str | None = None) -> str | None:
    """Gradient norm against depth on a log scale, one line per model (mean over seeds).

    Args:
        rows: gradnorms rows (``model, seed, name, kind, depth, norm``).
        path: the PNG to write.
        kind: ``'activation'`` or ``'param'``.
    """
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
    means = mean_over([r for r in rows if r["kind"] == kind], ["model", "depth"], ["norm"])
    for model in dict.fromkeys(r["model"] for r in means):
        pts = [(r["depth"], r["norm"]) for r in means if r["model"] == model and r["norm"] > 0]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=model)
    ax.set_yscale("log")
    ax.set_xlabel("block index (input to output)" if kind == "activation" else "weight layer (input to output)")
    ax.set_ylabel("||dL/dx_l||" if kind == "activation" else "||dL/dW||")
    ax.set_title(title or f"gradient norm through depth ({kind})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_skip_branch(block_rows: list, path, title: str | None = None) -> str | None:
    """Skip-term and branch-term norms per block, one panel per model (mean over seeds)."""
    plt = pyplot()
    if plt is None:
        return None
    means = mean_over(block_rows, ["model", "index"], ["norm_skip", "norm_branch", "norm_grad_in"])
    models = list(dict.fromkeys(r["model"] for r in means))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), dpi=80, squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [r for r in means if r["model"] == model]
        idx = [r["index"] for r in rows]
        for key, label in (("norm_grad_in", "||dL/dx|| (total)"), ("norm_skip", "||S^T g|| (skip)"),
                           ("norm_branch", "||(dF/dx)^T g|| (branch)")):
            vals = [r[key] if r[key] > 0 else float("nan") for r in rows]
            ax.plot(idx, vals, marker=".", label=label)
        ax.set_yscale("log")
        ax.set_title(model)
        ax.set_xlabel("block index")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("gradient norm")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def ensure_dir(path) -> str:
    """Create ``path`` (and parents) if needed and return it."""
    os.makedirs(path, exist_ok=True)
    return path
