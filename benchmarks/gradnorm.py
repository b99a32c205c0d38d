"""Gradient norms at initialisation: plain against residual nets, shortcut options and scales.

Reproduces, at initialisation (Kaiming normal fan_out, BN in train mode, one batch), the
ratio ``||dL/dW conv1|| / ||dL/dW last conv||`` for plain and residual CIFAR nets of
depth 20, 56 and 110, option A against B, original against pre-activation, shortcut
scales ``lambda`` in {0.5, 0.9, 1.0, 1.1}, and the path-length curve of Veit et al. (2016).

When PyTorch is installed, every minires model is mirrored by the equivalent PyTorch
model of the parity tests (``tests/torch_reference.py``), loaded with minires' initial
weights (state-dict keys match), and run on the same batch, so the two numbers compare
like with like.

Writes ``benchmarks/results/gradnorm.csv`` (one row per run), ``gradnorm.md`` (tables),
``gradnorm_depth.png``, ``gradnorm_scale.png``, ``path_length.csv`` and ``path_length.png``.

Usage::

    python benchmarks/gradnorm.py                     # everything (long on 2 CPU cores)
    python benchmarks/gradnorm.py --parts depth --depths 20 56 --seeds 3
    python benchmarks/gradnorm.py --quick             # a smoke run: batch 16, depth 20, 1 seed
    mpiexec -n 4 python benchmarks/gradnorm.py        # the runs spread over 4 processes (same CSV rows)

Under MPI the runs are spread over the ranks (:func:`minires.distributed.run_sweep`); rank
0 appends the rows in the order one process would and writes the tables, plots and the
path-length parts.
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
from minires.backend import as_numpy, to_device  # noqa: E402
from minires import analysis, distributed  # noqa: E402
from minires.analysis.inputs import load_batch  # noqa: E402
from minires.models import create  # noqa: E402
from minires.analysis.report import markdown_table, pyplot  # noqa: E402

PYTORCH_REFERENCE = {  # mean log10 over 3 seeds, quoted by the issue (same definition)
    ("plain", 20): 1.11, ("plain", 56): 3.51, ("plain", 110): 6.92,
    ("resnet", 20): 0.57, ("resnet", 56): 1.06, ("resnet", 110): 1.48,
}
FIELDS = ["part", "model", "family", "depth", "shortcut", "scale", "seed", "batch", "data",
          "minires_log10", "torch_log10", "diff", "first_norm", "last_norm", "minires_s", "torch_s", "device"]


# ----------------------------------------------------------------------------------------
# PyTorch mirror of minires' CIFAR nets: the tests' reference CIFAR ResNet (same state-dict keys)

def torch_mirror(name: str, shortcut: str, scale: float):
    """A PyTorch CIFAR net with minires' structure and keys, for ``name`` like 'plain56'."""
    from tests.torch_reference import CifarBasicBlock, PreActBlock, cifar_resnet  # noqa: PLC0415

    family, depth = _family(name)
    block = PreActBlock if family == "preact" else CifarBasicBlock
    return cifar_resnet(depth, 10, block, shortcut=shortcut, skip=family != "plain", scale=scale)


def _family(name: str):
    for prefix, family in (("preact_resnet", "preact"), ("plain", "plain"), ("resnet", "resnet")):
        if name.startswith(prefix):
            return family, int(name[len(prefix):])
    raise ValueError(name)


def torch_log10_ratio(model_mr, name, shortcut, scale, x, y, first, last, device="cpu"):
    """log10 of the same ratio in the PyTorch mirror loaded with ``model_mr``'s weights."""
    import torch  # noqa: PLC0415

    tdev = "cuda" if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.allow_tf32 = False  # full float32, as minires
    torch.backends.cuda.matmul.allow_tf32 = False
    net = torch_mirror(name, shortcut, scale)
    state = {k: torch.from_numpy(np.array(as_numpy(v.data if isinstance(v, mr.Tensor) else v)))
             for k, v in model_mr.state_dict().items()}
    net.load_state_dict(state, strict=True)
    net.to(tdev).train()
    if x.dtype == np.float64:
        net = net.double()
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x).to(tdev)), torch.from_numpy(y).to(tdev))
    loss.backward()
    params = dict(net.named_parameters())
    ratio = params[first].grad.norm().item() / params[last].grad.norm().item()
    return math.log10(ratio), time.perf_counter() - start


def has_torch() -> bool:
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------

def one_run(part, name, shortcut, scale, seed, batch, args, use_torch):
    x, y = load_batch(args.data, batch, seed)
    mr.manual_seed(seed)
    kwargs = {"shortcut": shortcut} if shortcut else {}
    if scale != 1.0:
        kwargs["shortcut_scale"] = scale
    model = create(name, **kwargs)
    model.train()
    if part == "float64":  # the same weights and batch in double precision
        model = model.double()
        x = x.astype(np.float64)
    xd, yd = x, y
    if args.device != "cpu":
        model.to(args.device)
        xd, yd = to_device(x, args.device), to_device(y, args.device)
    start = time.perf_counter()
    res = analysis.conv_gradient_ratio(model, mr.Tensor(xd), mr.Tensor(yd))
    if args.device != "cpu":
        mr.backend.synchronize(args.device)
    seconds = time.perf_counter() - start
    family, depth = _family(name)
    row = {"part": part, "model": name, "family": family, "depth": depth,
           "shortcut": shortcut or "default", "scale": scale, "seed": seed, "batch": batch, "data": args.data,
           "minires_log10": res["log10_ratio"], "first_norm": res["first_norm"], "last_norm": res["last_norm"],
           "minires_s": seconds, "torch_log10": float("nan"), "diff": float("nan"), "torch_s": float("nan"),
           "device": args.device}
    if use_torch:
        t, ts = torch_log10_ratio(model, name, shortcut or ("B" if family == "preact" else "A"), scale, x, y,
                                  res["first"], res["last"], args.device)
        row.update(torch_log10=t, diff=res["log10_ratio"] - t, torch_s=ts)
    print(f"[{part}] {name} shortcut={row['shortcut']} scale={scale} seed={seed}: minires log10 ratio "
          f"{row['minires_log10']:.3f}, torch {row['torch_log10']:.3f} ({seconds:.1f} s)", flush=True)
    return row


def append_row(path, row):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("depth", "seed", "batch"):
            r[k] = int(r[k])
        r.setdefault("device", "cpu")
        for k in ("scale", "minires_log10", "torch_log10", "diff", "first_norm", "last_norm", "minires_s", "torch_s"):
            r[k] = float(r[k])
    return rows


def plan(args):
    jobs = []
    seeds = lambda d: range(args.seeds.get(d, args.default_seeds))  # noqa: E731
    if "depth" in args.parts:
        for depth in args.depths:
            for family in ("plain", "resnet"):
                for s in seeds(depth):
                    jobs.append(("depth", f"{family}{depth}", "A", 1.0, s))
    if "option" in args.parts:
        for s in range(args.default_seeds):
            jobs.append(("option", "resnet56", "B", 1.0, s))  # option A runs in the depth part
    if "preact" in args.parts:
        for s in range(args.default_seeds):
            jobs.append(("preact", "preact_resnet56", "A", 1.0, s))
            jobs.append(("preact", "preact_resnet56", "B", 1.0, s))
    if "float64" in args.parts:
        for spec in args.float64_runs:
            name, seed = spec.split(":")
            jobs.append(("float64", name, "A", 1.0, int(seed)))
    if "scale" in args.parts:
        for depth in args.scale_depths:
            for scale in (0.5, 0.9, 1.1):
                for s in range(args.scale_seeds):
                    jobs.append(("scale", f"resnet{depth}", "A", scale, s))
    return jobs


def summarise(rows, args):
    """Markdown tables and plots from all rows in the CSV."""
    lines = ["# Gradient norms at initialisation (benchmarks/gradnorm.py)\n",
             "Ratio r = ||dL/dW conv1|| / ||dL/dW last conv|| (the last block's conv2), mean cross-entropy, "
             "Kaiming normal (fan_out) init, BN in train mode, one batch of 128: the embedded CIFAR-10 subset "
             "(normalised), unless a table says gaussian. `torch` is the same definition in an equivalent PyTorch model loaded with "
             "minires' initial weights and fed the same batch. Values are log10 r, mean (std) over seeds.\n"]

    def stats(vals):
        vals = [v for v in vals if math.isfinite(v)]
        if not vals:
            return float("nan"), float("nan")
        return float(np.mean(vals)), float(np.std(vals))

    def group(part_rows, keys):
        out = {}
        for r in part_rows:
            out.setdefault(tuple(r[k] for k in keys), []).append(r)
        return out

    all_depth_rows = [r for r in rows if r["part"] == "depth"]
    depth_rows = [r for r in all_depth_rows if r["data"] == args.data]
    if all_depth_rows:
        table = []
        for (data, family, depth), rs in sorted(group(all_depth_rows, ["data", "family", "depth"]).items()):
            m, ms = stats([r["minires_log10"] for r in rs])
            t, ts = stats([r["torch_log10"] for r in rs])
            d, _ = stats([r["diff"] for r in rs])
            table.append({"data": data, "net": f"{family}{depth}", "seeds": len(rs), "batch": rs[0]["batch"],
                          "minires": f"{m:.2f} ({ms:.2f})", "torch (same weights)": f"{t:.2f} ({ts:.2f})",
                          "max |diff| per seed": f"{max(abs(r['diff']) for r in rs):.3f}" if math.isfinite(d) else "",
                          "issue's PyTorch ref": PYTORCH_REFERENCE.get((family, depth), ""),
                          "s / minires run": f"{stats([r['minires_s'] for r in rs])[0]:.1f}"})
        lines += ["## Plain against residual, by depth (option A)\n",
                  "`embedded`: the CIFAR-10 subset shipped with minires (real images); `gaussian`: N(0, 1) images "
                  "with uniformly random labels.\n", markdown_table(table)]
    f64 = [r for r in rows if r["part"] == "float64"]
    if f64:
        table = []
        for r in f64:
            f32 = [d for d in all_depth_rows if d["model"] == r["model"] and d["seed"] == r["seed"]
                   and d["data"] == r["data"]]
            table.append({"net": r["model"], "seed": r["seed"], "data": r["data"],
                          "minires float32": f32[0]["minires_log10"] if f32 else float("nan"),
                          "torch float32": f32[0]["torch_log10"] if f32 else float("nan"),
                          "minires float64": r["minires_log10"], "torch float64": r["torch_log10"],
                          "float64 diff": r["diff"]})
        lines += ["\n## Float32 rounding in deep plain nets\n",
                  "The largest minires-torch gaps (plain nets, same weights and batch) come from float32 rounding "
                  "amplified through the exploding backward pass: in float64 the two agree.\n", markdown_table(table)]
    rows = [r for r in rows if r["data"] == args.data]
    opt = [r for r in rows if r["part"] in ("option", "preact") or (r["part"] == "depth" and r["model"] == "resnet56")]
    if opt:
        table = []
        for (model, sc), rs in group(opt, ["model", "shortcut"]).items():
            m, ms = stats([r["minires_log10"] for r in rs])
            t, ts = stats([r["torch_log10"] for r in rs])
            table.append({"net": model, "shortcut": sc, "seeds": len(rs), "minires": f"{m:.2f} ({ms:.2f})",
                          "torch": f"{t:.2f} ({ts:.2f})"})
        lines += ["\n## Option A against B, original against pre-activation (depth 56)\n", markdown_table(table)]
    scale_rows = [r for r in rows if r["part"] == "scale" or (r["part"] == "depth" and r["family"] == "resnet"
                                                                and r["depth"] in args.scale_depths)]
    if scale_rows:
        table = []
        for (model, scale), rs in sorted(group(scale_rows, ["model", "scale"]).items(),
                                         key=lambda kv: (_family(kv[0][0])[1], kv[0][1])):
            m, ms = stats([r["minires_log10"] for r in rs])
            t, _ = stats([r["torch_log10"] for r in rs])
            n_blocks = (_family(model)[1] - 2) // 2
            table.append({"net": model, "lambda": scale, "blocks n": n_blocks, "seeds": len(rs),
                          "minires": f"{m:.2f} ({ms:.2f})", "torch": f"{t:.2f}",
                          "n log10(lambda)": f"{n_blocks * math.log10(scale):.2f}"})
        lines += ["\n## Shortcut scale lambda (option A, scaled identity on every block)\n",
                  "The skip-only path multiplies the gradient by lambda once per block, so the input-side "
                  "gradient moves by about n log10(lambda) decades against lambda = 1.\n", markdown_table(table)]
        _plot_scale(scale_rows, os.path.join(args.out, "gradnorm_scale.png"))
    for data in dict.fromkeys(r["data"] for r in all_depth_rows):
        stem = "gradnorm_depth" if data == args.data else f"gradnorm_depth_{data}"
        _plot_depth([r for r in all_depth_rows if r["data"] == data], os.path.join(args.out, f"{stem}.png"),
                    f"gradient ratio at initialisation ({data} data)")
    return "\n".join(lines)


def _plot_depth(rows, path, title="gradient ratio at initialisation"):
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=80)
    for family, color in (("plain", "tab:red"), ("resnet", "tab:blue")):
        depths = sorted({r["depth"] for r in rows if r["family"] == family})
        if not depths:
            continue
        m = [np.mean([r["minires_log10"] for r in rows if r["family"] == family and r["depth"] == d]) for d in depths]
        ax.plot(depths, m, "o-", color=color, label=f"{family} (minires)")
        for d in depths:
            pts = [r["minires_log10"] for r in rows if r["family"] == family and r["depth"] == d]
            ax.plot([d] * len(pts), pts, ".", color=color, alpha=0.4)
        t = [np.nanmean([r["torch_log10"] for r in rows if r["family"] == family and r["depth"] == d])
             for d in depths]
        if np.isfinite(t).any():
            ax.plot(depths, t, "x--", color=color, label=f"{family} (PyTorch, same weights)")
        ref = [PYTORCH_REFERENCE.get((family, d), np.nan) for d in depths]
        ax.plot(depths, ref, "s:", color=color, alpha=0.5, mfc="none", label=f"{family} (issue's reference)")
    ax.set_xlabel("depth")
    ax.set_ylabel("log10 ||dL/dW conv1|| / ||dL/dW last conv||")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_scale(rows, path):
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=80)
    for model in sorted({r["model"] for r in rows}, key=lambda m: _family(m)[1]):
        scales = sorted({r["scale"] for r in rows if r["model"] == model})
        m = [np.mean([r["minires_log10"] for r in rows if r["model"] == model and r["scale"] == s]) for s in scales]
        ax.plot(scales, m, "o-", label=model)
    ax.set_xlabel("shortcut scale lambda")
    ax.set_ylabel("log10 ||dL/dW conv1|| / ||dL/dW last conv||")
    ax.set_title("constant shortcut scaling")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def path_lengths(args):
    x, y = load_batch(args.data, args.path_batch, 0)
    mr.manual_seed(0)
    model = create(args.path_model)
    model.train()
    if args.device != "cpu":
        model.to(args.device)
        x, y = to_device(x, args.device), to_device(y, args.device)
    start = time.perf_counter()
    res = analysis.path_length_distribution(model, mr.Tensor(x), mr.Tensor(y), samples=args.path_samples, seed=0)
    seconds = time.perf_counter() - start
    rows = res.rows()
    with open(os.path.join(args.out, "path_length.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    peak = rows[int(np.argmax([r["log10_total"] for r in rows]))]["k"]
    md = (f"\n## Path lengths (Veit et al. 2016), {args.path_model}, batch {args.path_batch}, "
          f"{args.path_samples} samples per length, {seconds:.0f} s\n\n"
          f"{res.n_blocks} blocks. Gradient magnitude at the first block's input from paths through k residual "
          f"branches (every other block passes the gradient through its shortcut only), and the total over all "
          f"C(n, k) paths of length k. The full gradient there has norm {res.full_gradient_norm:.3g}. "
          f"The total peaks at k = {peak}.\n\n" + markdown_table(rows))
    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), dpi=80)
        ks = [r["k"] for r in rows]
        axes[0].bar(ks, [r["path_fraction"] for r in rows])
        axes[0].set_title("share of paths of length k")
        axes[1].semilogy(ks, [r["magnitude_mean"] for r in rows], "o-")
        axes[1].set_title("gradient magnitude per path")
        axes[2].plot(ks, [r["log10_total"] for r in rows], "o-")
        axes[2].set_title("log10 total (count x magnitude)")
        for ax in axes:
            ax.set_xlabel("path length k")
            ax.grid(True, alpha=0.3)
        fig.suptitle(f"{args.path_model} at initialisation")
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "path_length.png"))
        plt.close(fig)
    return md


def skip_paths(args):
    """The skip-only path (k = 0) against lambda: the gradient it carries falls or grows as lambda^n."""
    x, y = load_batch(args.data, args.path_batch, 0)
    rows = []
    for depth in args.scale_depths:
        for scale in (0.5, 0.9, 1.0, 1.1):
            mr.manual_seed(0)
            model = create(f"resnet{depth}", shortcut_scale=scale).train()
            res = analysis.path_length_distribution(model, mr.tensor(x), mr.tensor(y), lengths=[0], samples=1)
            n = res.n_blocks
            rows.append({"net": f"resnet{depth}", "lambda": scale, "blocks n": n,
                         "log10 skip-path gain": math.log10(res.magnitude_mean[0] / res.output_gradient_norm),
                         "n log10(lambda)": n * math.log10(scale),
                         "log10 full gain": math.log10(res.full_gradient_norm / res.output_gradient_norm)})
            print(f"[skippath] resnet{depth} lambda={scale}: {rows[-1]}", flush=True)
    return (f"\n## The skip-only path against lambda (batch {args.path_batch}, seed 0)\n\n"
            "The conv1/last-conv ratio above does not follow lambda^n: with BN, a smaller lambda shrinks the stream "
            "and lets the normalised branches dominate, so the net behaves more like a plain one. The path through "
            "the shortcuts alone does scale as lambda^n (times the post-add ReLU masks): log10 of "
            "||dL/dx_0|| along that path over ||dL/dy|| at the last block, next to n log10(lambda), and the gain of "
            "the full gradient.\n\n" + markdown_table(rows))


def run_all(args, comm, csv_path, use_torch):
    """The planned runs not yet in the CSV, spread over the ranks; rank 0 appends each row in plan order."""
    done = None
    if comm.is_writer:
        done = {(r["part"], r["model"], r["shortcut"], r["scale"], r["seed"], r["batch"], r["data"])
                for r in read_rows(csv_path)}
    done = comm.bcast_object(done)
    jobs = [job for job in plan(args) if (*job, args.batch_size, args.data) not in done]
    t0 = time.perf_counter()

    def out_of_time():
        if time.perf_counter() - t0 > args.time_budget:
            print(f"time budget of {args.time_budget:.0f} s spent: skipping the remaining runs", flush=True)
            return True
        return False

    distributed.run_sweep(jobs, lambda job: one_run(*job, args.batch_size, args, use_torch), comm,
                          on_result=lambda job, row: append_row(csv_path, row), should_stop=out_of_time)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=["depth", "option", "preact", "scale", "paths"],
                   choices=["depth", "option", "preact", "scale", "paths", "float64", "skippath"])
    p.add_argument("--float64-runs", nargs="+", default=["plain56:3", "plain110:1"],
                   help="MODEL:SEED runs repeated in float64 by the float64 part")
    p.add_argument("--depths", nargs="+", type=int, default=[20, 56, 110])
    p.add_argument("--seeds", nargs="+", default=["20:5", "56:5", "110:3"],
                   help="seeds per depth as DEPTH:COUNT (default 20:5 56:5 110:3)")
    p.add_argument("--default-seeds", type=int, default=3, help="seeds for the option/preact parts")
    p.add_argument("--scale-depths", nargs="+", type=int, default=[20, 56])
    p.add_argument("--scale-seeds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data", default="embedded", help="embedded, gaussian or a CIFAR-10 path; the tables "
                   "other than the depth one use this data")
    p.add_argument("--path-model", default="resnet56")
    p.add_argument("--path-batch", type=int, default=32)
    p.add_argument("--path-samples", type=int, default=3)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--fresh", action="store_true", help="start a new gradnorm.csv instead of appending")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu or cuda (minires and the PyTorch mirror)")
    p.add_argument("--time-budget", type=float, default=float("inf"),
                   help="start no new run after this many seconds (the summary covers what ran)")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 16, depth 20, one seed, few paths")
    p.add_argument("--summary-only", action="store_true", help="rewrite gradnorm.md from the CSV")
    args = p.parse_args(argv)
    comm = distributed.init()
    with distributed.abort_on_error(comm):  # one rank failing ends the others
        _main(args, comm)


def _main(args, comm):
    args.seeds = {int(k): int(v) for k, v in (s.split(":") for s in args.seeds)}
    if args.quick:
        args.batch_size, args.depths, args.seeds, args.default_seeds = 16, [20], {20: 1}, 1
        args.scale_depths, args.scale_seeds = [20], 1
        args.path_model, args.path_batch, args.path_samples = "resnet20", 8, 1
        args.parts = [p for p in args.parts if p not in ("option", "preact")]
    csv_path = os.path.join(args.out, "gradnorm.csv")
    if comm.is_writer:
        os.makedirs(args.out, exist_ok=True)
        if args.fresh and os.path.exists(csv_path) and not args.summary_only:
            os.remove(csv_path)
    use_torch = has_torch() and not args.no_torch
    if not use_torch and comm.is_writer:
        print("PyTorch is not installed (or --no-torch): minires numbers only")
    if not args.summary_only:
        run_all(args, comm, csv_path, use_torch)
    if not comm.is_writer:
        return
    rows = [r for r in read_rows(csv_path) if r["batch"] == args.batch_size]
    text = summarise(rows, args)
    md_path = os.path.join(args.out, "gradnorm.md")
    old = open(md_path).read() if os.path.exists(md_path) else ""
    sections = {}
    for title in ("## The skip-only path", "## Path lengths"):  # keep earlier sections not rerun now
        if title in old:
            start = old.index(title)
            ends = [old.index(t, start + 1) for t in ("\n## ",) if t in old[start + 1:]]
            sections[title] = old[start:ends[0]] if ends else old[start:]
    if "skippath" in args.parts and not args.summary_only:
        sections["## The skip-only path"] = skip_paths(args).lstrip("\n")
    if "paths" in args.parts and not args.summary_only:
        sections["## Path lengths"] = path_lengths(args).lstrip("\n")
    for title in ("## The skip-only path", "## Path lengths"):
        if title in sections:
            text += "\n" + sections[title].rstrip("\n") + "\n"
    with open(md_path, "w") as f:
        f.write(text + "\n")
    print(f"wrote {md_path}")


if __name__ == "__main__":
    main()
