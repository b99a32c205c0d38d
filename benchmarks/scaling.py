"""Data-parallel scaling of minires on CPUs: throughput, allreduce cost, and a cost model for clusters.

One run measures, each configuration in fresh worker processes:

1. **Throughput** of a training step (forward, cross-entropy, backward, gradient allreduce,
   SGD with momentum and weight decay) of ``--model`` (ResNet-20) at the global batch
   ``--batch-size`` (128) as 1 rank x 2 threads, 2 ranks x 1 thread (``mpiexec -n 2``) and
   PyTorch with 2 threads (the CIFAR ResNet of ``benchmarks/speed.py``), alternated over
   ``--rounds`` rounds with the order rotated each round, so drift of a shared machine
   spreads over all three. The batch is resident (random images, fixed seed): the data
   pipeline, which runs in a prefetch thread during training, is not part of the step.
   Each 2-rank step also records the time inside the gradient allreduce (including any wait
   for the slower rank): its share of the step is the goal's "allreduce <= 5% of a step".
2. **Allreduce time per step** at 2 ranks for the gradients of ``--allreduce-models``
   (ResNet-20/56/110, ResNet-50): pack into the flat buffer, ``MPI_Allreduce``, unpack
   (``minires.distributed.GradientAllreduce``), median of ``--reps`` calls, with the
   gradient size; and one training step of each model on one node (1 rank x
   ``--threads`` threads; CIFAR models at ``--batch-size`` 32x32 images, ResNet-50 at
   ``--imagenet-batch`` 224x224 images).
3. **A cost model** of weak-scaling efficiency on 1-64 nodes (each node this machine, with
   its per-node batch) over 10, 25 and 100 Gbit/s networks: ring allreduce
   ``T(p) = 2 (p - 1) / p * S / B + 2 (p - 1) * a`` for ``S`` gradient bytes, bandwidth
   ``B`` and per-message latency ``a`` (``--latency-us``, 25 us), no overlap with backward:
   ``efficiency(p) = t_step / (t_step + T(p))``.

Writes ``OUT/scaling.json``, ``OUT/scaling.md`` and ``OUT/scaling.png`` (with matplotlib).

Usage::

    python benchmarks/scaling.py                   # full measurement (roughly 10-20 minutes on 2 cores)
    python benchmarks/scaling.py --quick           # smoke run: tiny batches, one round, small models
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from speed import _batch, _machine, _median_time, minires_model_and_sgd, torch_cifar_resnet  # noqa: E402

CONFIGS = [("minires", 1, 2), ("minires", 2, 1), ("torch", 1, 2)]  # (framework, ranks, threads per rank)
BANDWIDTHS_GBIT = (10, 25, 100)
NODES = (1, 2, 4, 8, 16, 32, 64)


# --- workers (run in their own processes) ---------------------------------------------------

def worker_minires_throughput(args) -> dict | None:
    """Training steps of ``args.model`` on this rank's part of a resident global batch."""
    import numpy as np  # noqa: PLC0415

    import minires as mr  # noqa: PLC0415
    import minires.functional as F  # noqa: PLC0415
    from minires import distributed  # noqa: PLC0415

    comm = distributed.init()
    parallel = distributed.DataParallel(comm)
    images, labels = _batch(args.batch_size)
    x, y = mr.Tensor(parallel.sampler.split(images)), mr.Tensor(parallel.sampler.split(labels))
    mr.manual_seed(0)
    model, opt = minires_model_and_sgd(args.model)
    model = parallel.prepare(model)
    weight = parallel.loss_weight(len(y.data), args.batch_size)
    reduce_times = []

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward() if weight == 1.0 else loss.backward(np.asarray(weight, np.float32))
        start = time.perf_counter()
        parallel.reduce_step(float(loss.item()) * len(y.data), 0, False)
        reduce_times.append(time.perf_counter() - start)
        opt.step()

    for _ in range(args.warmup):
        step()
    reduce_times.clear()
    times = []
    for _ in range(args.steps):
        comm.barrier()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times = comm.allgather_object(times)
    reduce_times = comm.allgather_object(reduce_times)
    if not comm.is_writer:
        return None
    step_s = statistics.median(max(ts) for ts in zip(*times))  # a step ends when the slowest rank ends
    return {"step_s": step_s, "images_per_s": args.batch_size / step_s,
            "allreduce_s": statistics.median(max(rs) for rs in zip(*reduce_times)) if comm.size > 1 else 0.0}


def worker_torch_throughput(args) -> dict:
    """The same steps in PyTorch (``torch.set_num_threads(args.threads)``)."""
    import torch  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    images, labels = _batch(args.batch_size)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    torch.manual_seed(0)
    model = torch_cifar_resnet(args.model).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step_s = _median_time(step, args.steps, args.warmup)[0]
    return {"step_s": step_s, "images_per_s": args.batch_size / step_s}


def _random_grads(model, seed=0):
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.grad = rng.standard_normal(p.data.shape).astype(p.data.dtype)


def worker_allreduce(args) -> dict | None:
    """Median time of the gradient allreduce of each model (every rank, one call at a time)."""
    import numpy as np  # noqa: PLC0415

    from minires import distributed, models  # noqa: PLC0415

    comm = distributed.init()
    results = {}
    for name in args.allreduce_models:
        model = models.create(name)
        reduce = distributed.GradientAllreduce(model.parameters(), comm, num_extras=3)
        _random_grads(model)
        count = sum(p.data.size for p in model.parameters())
        flat = np.zeros(count + 3, np.float32)
        times, raw = [], []
        for i in range(args.reps + 2):
            comm.barrier()
            start = time.perf_counter()
            reduce((1.0, 2.0, 0.0))
            elapsed = time.perf_counter() - start
            comm.barrier()
            start = time.perf_counter()
            comm.allreduce(flat)
            if i >= 2:  # two warm-up calls
                times.append(elapsed)
                raw.append(time.perf_counter() - start)
        results[name] = {"parameters": count, "bytes": 4 * count, "allreduce_s": statistics.median(times),
                         "mpi_allreduce_only_s": statistics.median(raw), "ranks": comm.size}
    return results if comm.is_writer else None


def worker_step(args) -> dict:
    """One training step of each model on one node (this process, ``args.threads`` threads)."""
    import minires as mr  # noqa: PLC0415
    import minires.functional as F  # noqa: PLC0415
    from minires import models, optim  # noqa: PLC0415

    results = {}
    for name in args.allreduce_models:
        imagenet = name in models.IMAGENET_MODELS
        batch, size = (args.imagenet_batch, args.imagenet_size) if imagenet else (args.batch_size, 32)
        images, labels = _batch(batch, size=size)
        mr.manual_seed(0)
        model = models.create(name, num_classes=10)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        x, y = mr.Tensor(images), mr.Tensor(labels)
        times = []
        for i in range(args.model_steps + 1):
            start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if i:  # one warm-up step
                times.append(time.perf_counter() - start)
        results[name] = {"step_s": statistics.median(times), "batch": batch, "image_size": size,
                         "threads": args.threads}
    return results


# --- orchestration ----------------------------------------------------------------------------

def _mpiexec() -> str:
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if found is None:
        sys.exit("scaling.py: mpiexec not found; pip install -e '.[mpi]'")
    return found


def _run_worker(kind: str, ranks: int, threads: int, args, framework: str = "minires") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_", "HYDRA_"))}
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MINIRES_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    command = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--framework", framework,
               "--worker-out", out_path, "--threads", str(threads), "--model", args.model,
               "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--reps", str(args.reps), "--model-steps", str(args.model_steps),
               "--imagenet-batch", str(args.imagenet_batch), "--imagenet-size", str(args.imagenet_size),
               "--allreduce-models", *args.allreduce_models]
    if ranks > 1:
        command = [_mpiexec(), "-n", str(ranks)] + command
    try:
        subprocess.run(command, check=True, env=env, timeout=args.worker_timeout)
        with open(out_path) as f:
            return json.load(f)
    finally:
        os.unlink(out_path)


def measure_throughput(args) -> dict:
    rounds = {f"{fw}:{r}x{t}": [] for fw, r, t in CONFIGS}
    configs = [c for c in CONFIGS if c[0] != "torch" or _has_torch()]
    for i in range(args.rounds):
        order = configs[i % len(configs):] + configs[:i % len(configs)]
        for framework, ranks, threads in order:
            result = _run_worker("throughput", ranks, threads, args, framework)
            rounds[f"{framework}:{ranks}x{threads}"].append(result)
            print(f"round {i + 1}: {framework} {ranks} rank(s) x {threads} thread(s): "
                  f"{result['images_per_s']:.1f} images/s", flush=True)
    return {k: v for k, v in rounds.items() if v}


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def cost_model(allreduce: dict, steps: dict, latency_s: float) -> list:
    """Weak-scaling efficiency per model, bandwidth and node count (ring allreduce, no overlap)."""
    rows = []
    for name, ar in allreduce.items():
        t_step = steps[name]["step_s"]
        for gbit in BANDWIDTHS_GBIT:
            bandwidth = gbit * 1e9 / 8
            for p in NODES:
                ring = 0.0 if p == 1 else 2 * (p - 1) / p * ar["bytes"] / bandwidth + 2 * (p - 1) * latency_s
                rows.append({"model": name, "gbit_s": gbit, "nodes": p, "allreduce_s": ring,
                             "efficiency": t_step / (t_step + ring)})
    return rows


def markdown(record: dict) -> str:
    from minires.analysis.report import markdown_table  # noqa: PLC0415

    lines = [f"# Data-parallel scaling ({record['date']})\n",
             f"Machine: {record['machine']['cpu']}, {record['machine']['cores']} cores. Command: `{record['command']}`\n"]
    thr = record["throughput"]
    pure = record["allreduce"].get(record["args"]["model"], {}).get("allreduce_s")
    table = []
    for key, runs in thr.items():
        framework, layout = key.split(":")
        step = statistics.median(r["step_s"] for r in runs)
        ranks = framework == "minires" and not layout.startswith("1x")
        table.append({"framework": framework, "ranks x threads": layout,
                      "images/s (median)": statistics.median(r["images_per_s"] for r in runs), "step s": step,
                      "allreduce share": statistics.median(r["allreduce_s"] / r["step_s"] for r in runs)
                      if ranks else None,
                      "allreduce alone / step": pure / step if ranks and pure is not None else None})
    lines += [f"## Throughput: {record['args']['model']}, global batch {record['args']['batch_size']}, "
              f"{record['args']['rounds']} rounds\n",
              "`allreduce share`: time inside the step's gradient allreduce, waiting for the slower rank "
              "included; `allreduce alone / step`: the 2-rank allreduce of the table below over the step.\n",
              markdown_table(table)]
    table = [{"model": name, "parameters": v["parameters"], "gradient MB": v["bytes"] / 1e6,
              "allreduce ms (2 ranks)": 1e3 * v["allreduce_s"], "MPI_Allreduce alone ms": 1e3 * v["mpi_allreduce_only_s"],
              "step s (1 node)": record["steps"][name]["step_s"],
              "batch": f"{record['steps'][name]['batch']} x {record['steps'][name]['image_size']}px"}
             for name, v in record["allreduce"].items()]
    lines += ["\n## Gradient allreduce at 2 ranks on this machine\n", markdown_table(table)]
    model_rows = record["cost_model"]
    table = []
    for name in record["allreduce"]:
        for gbit in BANDWIDTHS_GBIT:
            row = {"model": name, "Gbit/s": gbit}
            row.update({f"{p} nodes": r["efficiency"] for r in model_rows
                        for p in [r["nodes"]] if r["model"] == name and r["gbit_s"] == gbit and p > 1})
            table.append(row)
    lines += [f"\n## Cost model: weak-scaling efficiency (ring allreduce, latency {record['args']['latency_us']} us "
              "per message, no overlap)\n", markdown_table(table)]
    return "\n".join(lines)


def plot(record: dict, path: str) -> str | None:
    from minires.analysis.report import pyplot  # noqa: PLC0415

    plt = pyplot()
    if plt is None:
        return None
    names = list(record["allreduce"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), dpi=80, squeeze=False)
    for ax, name in zip(axes[0], names):
        for gbit in BANDWIDTHS_GBIT:
            rows = [r for r in record["cost_model"] if r["model"] == name and r["gbit_s"] == gbit]
            ax.plot([r["nodes"] for r in rows], [r["efficiency"] for r in rows], "o-", label=f"{gbit} Gbit/s")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_title(name)
        ax.set_xlabel("nodes")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("scaling efficiency")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("data-parallel weak scaling, ring allreduce (cost model from this machine's step times)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20", help="model of the throughput comparison")
    p.add_argument("--batch-size", type=int, default=128, help="global batch of the throughput comparison")
    p.add_argument("--steps", type=int, default=10, help="timed steps per throughput worker")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--allreduce-models", nargs="+", default=["resnet20", "resnet56", "resnet110", "resnet50"])
    p.add_argument("--reps", type=int, default=20, help="timed allreduce calls per model")
    p.add_argument("--model-steps", type=int, default=2, help="timed one-node steps per model (cost model)")
    p.add_argument("--imagenet-batch", type=int, default=16, help="per-node batch of ResNet-50 (224x224)")
    p.add_argument("--imagenet-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads of the one-node steps")
    p.add_argument("--latency-us", type=float, default=25.0, help="per-message network latency of the cost model")
    p.add_argument("--worker-timeout", type=float, default=1800)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--quick", action="store_true", help="smoke run: tiny batches and models, one round")
    p.add_argument("--worker", choices=["throughput", "allreduce", "step"], help=argparse.SUPPRESS)
    p.add_argument("--framework", default="minires", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        work = {"throughput": worker_torch_throughput if args.framework == "torch" else worker_minires_throughput,
                "allreduce": worker_allreduce, "step": worker_step}[args.worker]
        result = work(args)
        if result is not None:
            with open(args.worker_out, "w") as f:
                json.dump(result, f)
        return
    if args.quick:
        args.batch_size, args.steps, args.warmup, args.rounds, args.reps = 8, 2, 1, 1, 3
        args.allreduce_models, args.model_steps, args.imagenet_batch, args.imagenet_size = \
            ["resnet20", "resnet50"], 1, 2, 32
    command = "python benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])

    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": _machine(), "command": command.strip(),
              "args": vars(args)}
    record["throughput"] = measure_throughput(args)
    print("allreduce at 2 ranks ...", flush=True)
    record["allreduce"] = _run_worker("allreduce", 2, 1, args)
    print("one-node steps ...", flush=True)
    record["steps"] = _run_worker("step", 1, args.threads, args)
    record["cost_model"] = cost_model(record["allreduce"], record["steps"], args.latency_us * 1e-6)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "scaling.json"), "w") as f:
        json.dump(record, f, indent=1)
    text = markdown(record)
    with open(os.path.join(args.out, "scaling.md"), "w") as f:
        f.write(text + "\n")
    plot(record, os.path.join(args.out, "scaling.png"))
    print(text)


if __name__ == "__main__":
    main()
