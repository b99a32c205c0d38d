"""CPU speed of minires against PyTorch: training step, inference, per-layer times, peak memory.

Each framework runs in its own fresh process (so neither's thread pools, allocator or page
cache state helps the other), and the two are alternated over ``--rounds`` rounds with the
starting framework swapped every round, so slow drift of a shared machine cancels out in the
per-round ratios. The printed and saved numbers are medians over rounds of
``minires time / PyTorch time``.

What one worker process measures (same model architecture, same weights, same batch):

- ``train_step_s``: one SGD step (zero grads, forward in train mode, cross-entropy,
  backward, ``SGD(lr=0.1, momentum=0.9, weight_decay=5e-4).step()``), median of ``--steps``
  timed steps after ``--warmup`` untimed ones;
- ``infer_s``: one eval-mode forward under ``no_grad``, median likewise, and the derived
  images per second;
- ``peak_rss_mib``: the process's peak resident set (``ru_maxrss``), with ``base_rss_mib``
  measured after imports and batch creation, before the model is built; their difference
  ``peak_delta_mib`` is the memory the work itself needed;
- with ``--layers``: forward and backward times of every distinct ResNet layer shape at
  this batch size (conv 3x3 at 16/32/64 channels, the stride-2 convs, batch norm, ReLU, the
  classifier head).

The minires model is ``minires.models.create(name)`` trained with ``minires.optim.SGD``
and ``minires.functional.cross_entropy`` (the documented API); the PyTorch model is the
CIFAR ResNet of He et al. (option-A shortcuts: stride-2 subsampling and zero channel
padding, as in akamaster/pytorch_resnet_cifar10) of the parity tests
(``tests/torch_reference.py``), loaded with minires' weights by name, and the first loss of
both is recorded as a check that the two compute the same function.

Usage::

    python benchmarks/speed.py --model resnet20 --batch-size 128 --rounds 3
    python benchmarks/speed.py --model resnet56 --rounds 3 --layers --out benchmarks/results/speed_resnet56.json

Environment: ``--threads`` sets ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MINIRES_NUM_THREADS`` and
``torch.set_num_threads`` in the workers. ``--unset-openblas-coretype`` removes
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` from the workers' environment (benchmarking
only; the OpenBLAS kernel in use is recorded either way).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


# --- helpers shared by both workers --------------------------------------------------------

def _time_step_and_inference(result, model, opt, images, labels, cross_entropy, no_grad, args) -> None:
    """Time a training step and eval-mode inference the same way for both frameworks."""
    model.train()
    losses = []

    def step():
        opt.zero_grad()
        loss = cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))

    result["train_step_s"], result["train_times"] = _median_time(step, args.steps, args.warmup)
    result["train_step_cpu_s"] = _cpu_times[-1]
    result["first_loss"] = losses[0]
    result["peak_rss_train_mib"] = _rss_mib()
    model.eval()

    def infer():
        with no_grad():
            return model(images)

    result["infer_s"], result["infer_times"] = _median_time(infer, args.steps, args.warmup)
    result["infer_cpu_s"] = _cpu_times[-1]


def _rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


_cpu_times: list = []


def _median_time(fn, steps: int, warmup: int) -> tuple[float, list]:
    """Median wall time of ``fn`` over ``steps`` calls after ``warmup``; the median process
    CPU time (all threads, user + system) of the same calls is left in ``_cpu_times[-1]``."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    _cpu_times.append(statistics.median(cpu))
    return statistics.median(times), times


def _batch(batch_size: int, seed: int = 0, size: int = 32):
    import numpy as np  # noqa: PLC0415
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, 10, size=batch_size).astype(np.int64)
    return images, labels


def _openblas_info() -> dict:
    """Which OpenBLAS NumPy loaded, its kernel (core name) and thread count (None where not found)."""
    import numpy as np  # noqa: PLC0415

    from minires.kernels.parallel import openblas_info  # noqa: PLC0415
    found = openblas_info()
    return {"numpy": np.__version__,
            "openblas": os.path.basename(found["path"]) if found["path"] is not None else None,
            "openblas_core": found["core"], "openblas_threads": found["threads"]}


# --- the two models ----------------------------------------------------------------------------

def torch_cifar_resnet(model_name: str):
    """The PyTorch CIFAR ResNet of the tests (``tests/torch_reference.py``), minires' keys."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tests.torch_reference import cifar_resnet  # noqa: PLC0415

    return cifar_resnet(int(model_name.removeprefix("resnet")))


def minires_model_and_sgd(model_name: str):
    """``minires.models.create(model_name)`` and its ``SGD(lr=0.1, momentum=0.9, weight_decay=5e-4)``."""
    import minires.models as models  # noqa: PLC0415
    from minires.optim import SGD  # noqa: PLC0415

    model = models.create(model_name)
    return model, SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def prepare_weights(model_name: str, path: str) -> None:
    """Build the minires model (seed 0) and save its state dict as ``.npz``."""
    import numpy as np  # noqa: PLC0415

    import minires as mr  # noqa: PLC0415
    mr.manual_seed(0)
    model, _ = minires_model_and_sgd(model_name)
    state = {k: np.asarray(v.data if hasattr(v, "data") else v) for k, v in model.state_dict().items()}
    np.savez(path, **state)


def worker_minires(args, weights_path: str) -> dict:
    import numpy as np  # noqa: PLC0415

    import minires as mr  # noqa: PLC0415
    import minires.functional as F  # noqa: PLC0415
    images_np, labels_np = _batch(args.batch_size)
    base = _rss_mib()
    mr.manual_seed(0)
    model, opt = minires_model_and_sgd(args.model)
    model.load_state_dict(dict(np.load(weights_path)))
    images, labels = mr.tensor(images_np), mr.tensor(labels_np)
    from minires.kernels.conv import get_conv_algorithm  # noqa: PLC0415
    result = {"framework": "minires", "conv_algorithm": get_conv_algorithm()}

    _time_step_and_inference(result, model, opt, images, labels, F.cross_entropy, mr.no_grad, args)
    if args.layers:
        result["layers"] = minires_layers(args)
    result.update(base_rss_mib=base, peak_rss_mib=_rss_mib())
    return result


def minires_layers(args) -> dict:
    """Forward and backward time of each distinct ResNet layer shape (minires).

    Inputs and output gradients are stored channels-last, as minires' activations are
    inside the network (except the stem convolution, which reads the NCHW images), so
    the times do not include layout conversions the network never makes.
    """
    import numpy as np  # noqa: PLC0415

    import minires as mr  # noqa: PLC0415
    import minires.functional as F  # noqa: PLC0415

    def channels_last(a):
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    rng = np.random.default_rng(1)
    out = {}
    for name, make in _layer_cases(args.batch_size):
        x_shape, fwd = make(mr, F, rng, np)
        x_np = rng.standard_normal(x_shape, dtype=np.float32)
        stem = name.startswith("conv3x3 3->")
        x = mr.tensor(x_np if stem else channels_last(x_np), requires_grad=True)
        y = fwd(x)
        g = rng.standard_normal(y.shape, dtype=np.float32)
        if y.data.ndim == 4 and not (isinstance(y.data, np.ndarray) and y.data.flags.c_contiguous):
            g = channels_last(g)
        out[name] = _time_layer(fwd, x, g, args.layer_steps)
    return out


def _time_layer(fwd, x, g, steps: int) -> dict:
    """Median forward time and forward+backward minus forward, the same way for both frameworks."""
    t_f, _ = _median_time(lambda: fwd(x), steps, 1)
    t_fb, _ = _median_time(lambda: fwd(x).backward(g), steps, 1)
    return {"forward_ms": 1e3 * t_f, "backward_ms": 1e3 * max(t_fb - t_f, 0.0)}


def _layer_cases(batch: int):
    """(name, make) pairs; ``make(lib, F, rng, np)`` returns ``(input_shape, forward_fn)`` for either library."""
    cases = []

    def conv(cin, cout, hw, stride):
        def make(lib, F, rng, np):
            w = lib.tensor((rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32), requires_grad=True)
            return (batch, cin, hw, hw), lambda x: F.conv2d(x, w, None, stride, 1)
        return make

    def bn(c, hw, relu=False):
        # with relu: minires' fused F.batch_norm_relu (what its blocks run); PyTorch's relu(batch_norm)
        def make(lib, F, rng, np):
            weight = lib.tensor(np.ones(c, np.float32), requires_grad=True)
            bias = lib.tensor(np.zeros(c, np.float32), requires_grad=True)
            rm, rv = lib.tensor(np.zeros(c, np.float32)), lib.tensor(np.ones(c, np.float32))
            fused = getattr(F, "batch_norm_relu", None) if relu else None
            if fused is not None:
                return (batch, c, hw, hw), lambda x: fused(x, rm, rv, weight, bias, training=True)
            if relu:
                return (batch, c, hw, hw), lambda x: F.relu(F.batch_norm(x, rm, rv, weight, bias, training=True))
            return (batch, c, hw, hw), lambda x: F.batch_norm(x, rm, rv, weight, bias, training=True)
        return make

    def relu(c, hw):
        def make(lib, F, rng, np):
            return (batch, c, hw, hw), lambda x: F.relu(x)
        return make

    def head(c, hw):
        def make(lib, F, rng, np):
            w = lib.tensor((rng.standard_normal((10, c)) * 0.1).astype(np.float32), requires_grad=True)
            b = lib.tensor(np.zeros(10, np.float32), requires_grad=True)
            return (batch, c, hw, hw), lambda x: F.linear(F.adaptive_avg_pool2d(x, 1).flatten(1), w, b)
        return make

    cases.append(("conv3x3 3->16 @32", conv(3, 16, 32, 1)))
    for c, hw in ((16, 32), (32, 16), (64, 8)):
        cases.append((f"conv3x3 {c}->{c} @{hw}", conv(c, c, hw, 1)))
    cases.append(("conv3x3 16->32 /2 @32", conv(16, 32, 32, 2)))
    cases.append(("conv3x3 32->64 /2 @16", conv(32, 64, 16, 2)))
    for c, hw in ((16, 32), (32, 16), (64, 8)):
        cases.append((f"batchnorm {c} @{hw}", bn(c, hw)))
        cases.append((f"relu {c} @{hw}", relu(c, hw)))
        cases.append((f"batchnorm+relu {c} @{hw}", bn(c, hw, relu=True)))
    cases.append(("avgpool+linear 64 @8", head(64, 8)))
    return cases


# --- PyTorch side -----------------------------------------------------------------------------

def worker_torch(args, weights_path: str) -> dict:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch.nn.functional as TF  # noqa: PLC0415
    torch.set_num_threads(args.threads)
    images_np, labels_np = _batch(args.batch_size)
    base = _rss_mib()
    model = torch_cifar_resnet(args.model)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(weights_path).items()})  # same keys
    result = {"framework": "torch", "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images, labels = torch.from_numpy(images_np), torch.from_numpy(labels_np)
    _time_step_and_inference(result, model, opt, images, labels, TF.cross_entropy, torch.no_grad, args)
    if args.layers:
        result["layers"] = torch_layers(args)
    result.update(base_rss_mib=base, peak_rss_mib=_rss_mib())
    return result


def torch_layers(args) -> dict:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch.nn.functional as TF  # noqa: PLC0415

    class Lib:  # the two calls _layer_cases needs, PyTorch-flavoured
        @staticmethod
        def tensor(a, requires_grad=False):
            return torch.tensor(a, requires_grad=requires_grad)

    class TorchF:
        conv2d = staticmethod(TF.conv2d)
        relu = staticmethod(torch.relu)
        linear = staticmethod(TF.linear)
        adaptive_avg_pool2d = staticmethod(TF.adaptive_avg_pool2d)

        @staticmethod
        def batch_norm(x, rm, rv, w, b, training):
            return TF.batch_norm(x, rm, rv, w, b, training=training)

    rng = np.random.default_rng(1)
    out = {}
    for name, make in _layer_cases(args.batch_size):
        x_shape, fwd = make(Lib, TorchF, rng, np)
        x = torch.tensor(rng.standard_normal(x_shape, dtype=np.float32), requires_grad=True)
        y = fwd(x)
        g = torch.from_numpy(rng.standard_normal(tuple(y.shape), dtype=np.float32))
        out[name] = _time_layer(fwd, x, g, args.layer_steps)
    return out


# --- driver ------------------------------------------------------------------------------------

def _worker_env(args) -> dict:
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MINIRES_NUM_THREADS"):
        env[var] = str(args.threads)
    if args.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if args.unset_openblas_coretype:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_worker(framework: str, args, weights_path: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--weights", weights_path,
           "--worker-out", out_path, "--model", args.model, "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--layer-steps", str(args.layer_steps), "--conv-algorithm", args.conv_algorithm]
    if args.layers:
        cmd.append("--layers")
    subprocess.run(cmd, check=True, env=_worker_env(args))
    with open(out_path) as f:
        result = json.load(f)
    os.unlink(out_path)
    return result


def _machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def _summarise(rounds: list) -> dict:
    def ratios(key):
        return [r["minires"][key] / r["torch"][key] for r in rounds]

    summary = {}
    for key, name in (("train_step_s", "train_step_ratio"), ("infer_s", "infer_ratio"),
                      ("train_step_cpu_s", "train_step_cpu_ratio"), ("infer_cpu_s", "infer_cpu_ratio"),
                      ("peak_rss_mib", "peak_rss_ratio")):
        values = ratios(key)
        summary[name] = {"median": statistics.median(values), "per_round": values}
    deltas = [(r["minires"]["peak_rss_mib"] - r["minires"]["base_rss_mib"])
              / max(r["torch"]["peak_rss_mib"] - r["torch"]["base_rss_mib"], 1e-9) for r in rounds]
    summary["peak_delta_ratio"] = {"median": statistics.median(deltas), "per_round": deltas}
    for fw in ("minires", "torch"):
        summary[fw] = {
            "train_step_s": statistics.median(r[fw]["train_step_s"] for r in rounds),
            "infer_s": statistics.median(r[fw]["infer_s"] for r in rounds),
            "train_step_cpu_s": statistics.median(r[fw]["train_step_cpu_s"] for r in rounds),
            "infer_cpu_s": statistics.median(r[fw]["infer_cpu_s"] for r in rounds),
            "peak_rss_mib": statistics.median(r[fw]["peak_rss_mib"] for r in rounds),
            "base_rss_mib": statistics.median(r[fw]["base_rss_mib"] for r in rounds),
            "first_loss": rounds[0][fw]["first_loss"],
        }
        summary[fw]["images_per_s"] = rounds[0][fw].get("batch", 0) or None
    if "layers" in rounds[0]["minires"]:
        layers = {}
        for name in rounds[0]["minires"]["layers"]:
            entry = {}
            for part in ("forward_ms", "backward_ms"):
                for fw in ("minires", "torch"):
                    entry[f"{fw}_{part}"] = statistics.median(r[fw]["layers"][name][part] for r in rounds)
                entry[f"ratio_{part[:-3]}"] = statistics.median(
                    r["minires"]["layers"][name][part] / max(r["torch"]["layers"][name][part], 1e-9)
                    for r in rounds)
            layers[name] = entry
        summary["layers"] = layers
    return summary


def _print_summary(summary: dict, args) -> None:
    b = args.batch_size
    print(f"\n{args.model}, batch {b}, {args.threads} threads, {args.rounds} rounds (median ratio minires/torch)")
    for fw in ("minires", "torch"):
        s = summary[fw]
        print(f"  {fw:8s} train step {s['train_step_s'] * 1e3:8.1f} ms   inference {s['infer_s'] * 1e3:7.1f} ms "
              f"({b / s['infer_s']:6.0f} img/s)   peak RSS {s['peak_rss_mib']:7.1f} MiB "
              f"(+{s['peak_rss_mib'] - s['base_rss_mib']:.1f} over base)   first loss {s['first_loss']:.5f}")
    print(f"  CPU time per step (all threads): minires train {summary['minires']['train_step_cpu_s'] * 1e3:.0f} ms, "
          f"infer {summary['minires']['infer_cpu_s'] * 1e3:.0f} ms; torch train {summary['torch']['train_step_cpu_s'] * 1e3:.0f} ms, "
          f"infer {summary['torch']['infer_cpu_s'] * 1e3:.0f} ms; ratios train {summary['train_step_cpu_ratio']['median']:.2f}x "
          f"infer {summary['infer_cpu_ratio']['median']:.2f}x")
    print(f"  ratio    train {summary['train_step_ratio']['median']:.2f}x   infer {summary['infer_ratio']['median']:.2f}x"
          f"   peak RSS {summary['peak_rss_ratio']['median']:.2f}x   peak over base {summary['peak_delta_ratio']['median']:.2f}x")
    if "layers" in summary:
        print(f"\n  {'layer':24s} {'mr fwd':>8s} {'pt fwd':>8s} {'ratio':>6s} {'mr bwd':>8s} {'pt bwd':>8s} {'ratio':>6s}  (ms)")
        for name, e in summary["layers"].items():
            print(f"  {name:24s} {e['minires_forward_ms']:8.2f} {e['torch_forward_ms']:8.2f} {e['ratio_forward']:6.2f} "
                  f"{e['minires_backward_ms']:8.2f} {e['torch_backward_ms']:8.2f} {e['ratio_backward']:6.2f}")


def markdown(record: dict) -> str:
    """A short Markdown report of one ``speed.py`` record (the JSON this script writes)."""
    s = record["summary"]
    b = record["batch_size"]
    lines = [
        f"### {record['model']}, batch {b}, float32, {record['threads']} threads",
        "",
        f"{record['date_utc']}; {record['machine']['cpu']} ({record['machine']['cores']} cores); "
        f"NumPy {record['blas'].get('numpy')} with OpenBLAS core {record['blas'].get('openblas_core')}; "
        f"PyTorch {record['torch']}; minires conv algorithm `{record['conv_algorithm']}`; "
        f"OMP_WAIT_POLICY {record.get('omp_wait_policy', 'default')}; load average (1 min) before/after "
        + "/".join(f"{la[0]:.1f}" for la in record.get("load_average_before_after", [])) + ".",
        f"Command: `{record['command']}`",
        "",
        "| | minires | PyTorch | ratio (median of per-round ratios) |",
        "| --- | ---: | ---: | ---: |",
        f"| training step (ms) | {s['minires']['train_step_s'] * 1e3:.0f} | {s['torch']['train_step_s'] * 1e3:.0f} "
        f"| {s['train_step_ratio']['median']:.2f}x (rounds: "
        + ", ".join(f"{r:.2f}" for r in s["train_step_ratio"]["per_round"]) + ") |",
        f"| inference (ms per batch) | {s['minires']['infer_s'] * 1e3:.0f} | {s['torch']['infer_s'] * 1e3:.0f} "
        f"| {s['infer_ratio']['median']:.2f}x (rounds: "
        + ", ".join(f"{r:.2f}" for r in s["infer_ratio"]["per_round"]) + ") |",
        f"| CPU time per training step, all threads (ms) | {s['minires']['train_step_cpu_s'] * 1e3:.0f} "
        f"| {s['torch']['train_step_cpu_s'] * 1e3:.0f} | {s['train_step_cpu_ratio']['median']:.2f}x |",
        f"| CPU time per inference batch, all threads (ms) | {s['minires']['infer_cpu_s'] * 1e3:.0f} "
        f"| {s['torch']['infer_cpu_s'] * 1e3:.0f} | {s['infer_cpu_ratio']['median']:.2f}x |",
        f"| inference (images/s) | {b / s['minires']['infer_s']:.0f} | {b / s['torch']['infer_s']:.0f} | |",
        f"| peak RSS (MiB) | {s['minires']['peak_rss_mib']:.0f} | {s['torch']['peak_rss_mib']:.0f} "
        f"| {s['peak_rss_ratio']['median']:.2f}x |",
        f"| peak RSS over the post-import base (MiB) | {s['minires']['peak_rss_mib'] - s['minires']['base_rss_mib']:.0f} "
        f"| {s['torch']['peak_rss_mib'] - s['torch']['base_rss_mib']:.0f} | {s['peak_delta_ratio']['median']:.2f}x |",
        f"| first training loss (same weights, same batch) | {s['minires']['first_loss']:.5f} "
        f"| {s['torch']['first_loss']:.5f} | |",
    ]
    if "layers" in s:
        lines += ["", "| layer (batch %d) | minires fwd | PyTorch fwd | ratio | minires bwd | PyTorch bwd | ratio |" % b,
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, e in s["layers"].items():
            lines.append(f"| {name} | {e['minires_forward_ms']:.2f} | {e['torch_forward_ms']:.2f} | {e['ratio_forward']:.2f} "
                         f"| {e['minires_backward_ms']:.2f} | {e['torch_backward_ms']:.2f} | {e['ratio_backward']:.2f} |")
        lines.append("")
        lines.append("(times in ms, medians; backward = forward+backward minus forward)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20", choices=MODELS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per worker")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--layers", action="store_true", help="also time every distinct layer shape")
    parser.add_argument("--layer-steps", type=int, default=5)
    parser.add_argument("--conv-algorithm", default="auto", help="minires conv algorithm ('auto', 'reference', ...)")
    parser.add_argument("--unset-openblas-coretype", action="store_true")
    parser.add_argument("--omp-passive", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE in the workers: PyTorch's OpenMP threads sleep instead of "
                             "spinning, much faster for it on a machine shared with other busy processes")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "speed.json"))
    parser.add_argument("--markdown", help="also write a Markdown summary to this path")
    parser.add_argument("--from-json", help="only turn an existing result JSON into Markdown (with --markdown)")
    parser.add_argument("--worker", choices=("minires", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.from_json:
        with open(args.from_json) as f:
            text = markdown(json.load(f))
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(text)
        print(text)
        return 0
    if args.prepare:
        prepare_weights(args.model, args.prepare)
        return 0
    if args.worker:
        if args.worker == "minires" and args.conv_algorithm != "auto":
            from minires.kernels.conv import set_conv_algorithm  # noqa: PLC0415
            set_conv_algorithm(args.conv_algorithm)
        fn = worker_minires if args.worker == "minires" else worker_torch
        result = fn(args, args.weights)
        result["blas"] = _openblas_info()
        result["batch"] = args.batch_size
        with open(args.worker_out, "w") as f:
            json.dump(result, f)
        return 0

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "weights.npz")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--prepare", weights, "--model", args.model],
                       check=True, env=_worker_env(args))
        rounds = []
        for r in range(args.rounds):
            order = ("minires", "torch") if r % 2 == 0 else ("torch", "minires")
            results = {}
            for fw in order:
                results[fw] = _run_worker(fw, args, weights)
                print(f"round {r + 1}/{args.rounds} {fw:8s} train {results[fw]['train_step_s'] * 1e3:8.1f} ms  "
                      f"infer {results[fw]['infer_s'] * 1e3:7.1f} ms  peak RSS {results[fw]['peak_rss_mib']:.0f} MiB",
                      flush=True)
            rounds.append(results)
    summary = _summarise(rounds)
    for fw in ("minires", "torch"):
        summary[fw]["images_per_s"] = args.batch_size / summary[fw]["infer_s"]
    _print_summary(summary, args)
    record = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": _machine(), "blas": rounds[0]["minires"].get("blas"),
        "torch": rounds[0]["torch"].get("torch"), "model": args.model, "batch_size": args.batch_size,
        "threads": args.threads, "omp_wait_policy": "PASSIVE" if args.omp_passive else "default",
        "load_average_before_after": [load_before, os.getloadavg()], "conv_algorithm": rounds[0]["minires"].get("conv_algorithm"),
        "summary": summary, "rounds": rounds,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"\nwrote {args.out}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(record))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
