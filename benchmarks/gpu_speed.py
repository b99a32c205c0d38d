"""GPU speed of minires (CuPy) against PyTorch eager with cuDNN, kernel launches, CUDA graphs.

One process, one GPU. For each model (default ResNet-20/56/110 at batch 128, float32):

- **check**: both frameworks start from the same weights (minires' seed-0 init copied into
  the PyTorch model by name) and the same batch; the first training losses and the loss
  after one SGD step are recorded side by side (they must agree to float32 accuracy).
- **train step**: zero grads, forward in train mode, cross-entropy, backward,
  ``SGD(lr=0.1, momentum=0.9, weight_decay=5e-4).step()``; **inference**: eval-mode forward
  without gradients. Each round times ``--steps`` back-to-back calls between two device
  synchronisations (no synchronisation inside, so host and GPU overlap as in training),
  for minires then PyTorch or the reverse (the order alternates by round); the reported
  ratio is the median over rounds of ``minires time / PyTorch time``. PyTorch runs with
  ``torch.backends.cudnn.benchmark = True`` and its default (foreach) SGD.
- **kernel launches per step**: counted with ``torch.profiler`` (CUPTI): every GPU kernel,
  memcpy and memset issued in the process while one step runs is recorded, whichever
  library launched it (CuPy's kernels, cuBLAS, PyTorch). A self-test first checks that the
  counter sees exactly N launches of a CuPy kernel called N times. Where a step can be
  captured into a CUDA graph, the graph's node count is a second, independent count.
- **CUDA graphs** (``--graphs``): each segment (inference, forward+loss, forward+backward,
  whole training step) is warmed up and captured with ``cupy.cuda.Stream.begin_capture()``
  / ``end_capture()`` on a private memory pool; what fails to capture is reported with its
  error; what captures is replayed and timed against eager execution, and the training
  step's replays are checked against eager steps from the same state.

Every case is wrapped: an exception is logged with its traceback into the results and the
next case runs. Results go to ``OUT/gpu_speed.json`` and ``OUT/gpu_speed.md``.

Usage::

    python benchmarks/gpu_speed.py --out $OUT                     # full run on a GPU
    python benchmarks/gpu_speed.py --dry-run --device cpu --out /tmp/x   # smoke test anywhere
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import minires as mr  # noqa: E402
import minires.functional as F  # noqa: E402
from minires import backend  # noqa: E402
from minires.kernels.graph_gpu import CUBLAS_CAPTURE_REFUSAL  # noqa: E402

LOG = print
#: CUDA API calls that block the host (what a training step must not issue)
SYNC_CALL = re.compile(r"Synchronize|^cudaMemcpy$|^cudaMemcpy2D$|^cuMemcpyDtoH(_v2)?$|^cuMemcpy$")


# --- the PyTorch reference model: the same one the CPU benchmark uses -------------------------

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from speed import torch_cifar_resnet  # noqa: E402


# --- device helpers ----------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device != "cpu":
        backend.synchronize(device)
        try:
            import torch  # noqa: PLC0415

            if torch.cuda.is_available():
                torch.cuda.synchronize()
        except ImportError:
            pass


def _timed(fn, steps: int, sync) -> float:
    """Seconds per call of ``fn`` over ``steps`` back-to-back calls between two synchronisations."""
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def _error(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=12)}


def environment(device: str) -> dict:
    """Versions and device facts for the report."""
    info = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "python": platform.python_version(), "numpy": np.__version__, "minires": mr.__version__,
            "device": device, "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}
    try:
        import cupy as cp  # noqa: PLC0415

        info["cupy"] = cp.__version__
        if device != "cpu":
            props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
            name = props["name"]
            info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            info["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
            info["cuda_driver"] = cp.cuda.runtime.driverGetVersion()
    except Exception as exc:  # noqa: BLE001
        info["cupy"] = f"unavailable ({type(exc).__name__}: {exc})"
    try:
        import torch  # noqa: PLC0415

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


# --- the two frameworks --------------------------------------------------------------------------

class MiniresCase:
    """A minires model, optimizer and fixed batch on one device, with step/infer closures."""

    def __init__(self, name: str, batch: int, device: str, images: np.ndarray, labels: np.ndarray):
        from minires import models, optim  # noqa: PLC0415
        from minires.ops.loss import set_gpu_target_checks  # noqa: PLC0415

        if device != "cpu":
            set_gpu_target_checks(False)  # labels below are in range; no host read per step
        mr.manual_seed(0)
        self.model = models.create(name)
        self.state = {k: backend.as_numpy(v).copy() for k, v in self.model.state_dict().items()}
        self.model.to(device)
        self.opt = optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        self.x = mr.Tensor(backend.to_device(images, device))
        self.y = mr.Tensor(backend.to_device(labels, device))
        self.device = device
        self.loss = None

    def forward_loss(self):
        self.model.train()
        return F.cross_entropy(self.model(self.x), self.y)

    def forward_backward(self):
        loss = self.forward_loss()
        self.opt.zero_grad()
        loss.backward()
        return loss

    def step(self):
        loss = self.forward_backward()
        self.opt.step()
        self.loss = loss
        return loss

    def infer(self):
        self.model.eval()
        with mr.no_grad():
            out = self.model(self.x)
        self.model.train()
        return out


class TorchCase:
    """The same network in PyTorch (cuDNN, benchmark mode) with the same weights and batch."""

    def __init__(self, name: str, device: str, images: np.ndarray, labels: np.ndarray, state: dict):
        import torch  # noqa: PLC0415

        self.torch = torch
        torch.backends.cudnn.benchmark = True
        self.tdevice = "cuda" if device != "cpu" else "cpu"
        self.model = torch_cifar_resnet(name)
        wanted = self.model.state_dict()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise RuntimeError(f"minires state dict lacks {missing[:5]}")
        self.model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(state[k])) for k in wanted})
        self.model.to(self.tdevice)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        self.x = torch.from_numpy(images).to(self.tdevice)
        self.y = torch.from_numpy(labels).to(self.tdevice)
        self.loss = None

    def step(self):
        torch = self.torch
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.loss = loss
        return loss

    def infer(self):
        self.model.eval()
        with self.torch.no_grad():
            out = self.model(self.x)
        self.model.train()
        return out


def _batch(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, batch).astype(np.int64)
    return images, labels


def _loss_value(loss) -> float:
    if hasattr(loss, "item"):
        return float(loss.item())
    return float(loss)


# --- kernel launch counting ----------------------------------------------------------------------

def count_launches(fn, sync, top: int = 12) -> dict:
    """GPU kernels, memcpys and memsets issued while ``fn()`` runs, from a ``torch.profiler`` trace.

    Returns:
        ``{"kernels": n, "memcpy": n, "memset": n, "total": n, "top_kernels": [[name, count, us], ...]}``.
    """
    import torch  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    from torch.profiler import record_function  # noqa: PLC0415

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with record_function("minires_measured_region"):
            fn()
        sync()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    counts = {"kernels": 0, "memcpy": 0, "memset": 0}
    region = [e for e in events if e.get("name") == "minires_measured_region" and e.get("ph") == "X"
              and "gpu" not in str(e.get("cat", "")).lower()]  # the host span, not its GPU-timeline twin
    if region:
        start, end = float(region[0]["ts"]), float(region[0]["ts"]) + float(region[0].get("dur", 0))
        counts["host_syncs"] = sorted(
            str(e.get("name")) for e in events
            if str(e.get("cat", "")).lower() in ("cuda_runtime", "cuda_driver") and SYNC_CALL.search(str(e.get("name", "")))
            and start <= float(e.get("ts", 0)) <= end)
    per_name: dict = {}
    for e in events:
        cat = str(e.get("cat", "")).lower()
        if e.get("ph") != "X":
            continue
        if cat == "kernel":
            counts["kernels"] += 1
            name = str(e.get("name", "?"))[:90]
            entry = per_name.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += float(e.get("dur", 0.0))
        elif cat == "gpu_memcpy":
            counts["memcpy"] += 1
        elif cat == "gpu_memset":
            counts["memset"] += 1
    counts["total"] = counts["kernels"] + counts["memcpy"] + counts["memset"]
    counts["kernel_time_us"] = round(sum(v[1] for v in per_name.values()), 1)
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:top]
    counts["top_kernels_by_time"] = [[k, v[0], round(v[1], 1)] for k, v in ranked]
    del torch
    return counts


def _function_classes():
    """Every ``Function`` subclass defined so far (after the model ran once, all its ops are imported)."""
    from minires.autograd.function import Function  # noqa: PLC0415

    seen, stack = [], list(Function.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return seen


def launches_by_op(case, sync, top: int = 25) -> dict:
    """Kernel/memcpy/memset launch calls of one training step, attributed to the minires op that issued them.

    Every ``Function`` subclass's ``forward``/``backward`` and the optimizer step run inside a
    ``torch.profiler.record_function`` range; each CUDA runtime/driver launch call in the trace
    is charged to the innermost range that contains it (calls outside every range, such as the
    autograd engine's gradient sums and BatchNorm's ``num_batches_tracked += 1``, go to
    ``(other)``).
    """
    import torch  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile, record_function  # noqa: PLC0415

    patched = []

    def wrap(cls, attr, label):
        original = cls.__dict__[attr]

        def wrapper(self, *args, **kwargs):
            with record_function(label):
                return original(self, *args, **kwargs)

        setattr(cls, attr, wrapper)
        patched.append((cls, attr, original))

    for cls in _function_classes():
        for attr in ("forward", "backward"):
            if attr in cls.__dict__:
                wrap(cls, attr, f"{cls.__name__}.{attr}")
    opt_cls = type(case.opt)
    wrap(opt_cls, "step", f"{opt_cls.__name__}.step")
    try:
        sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            case.step()
            sync()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            with open(path) as f:
                trace = json.load(f)
    finally:
        for cls, attr, original in reversed(patched):
            setattr(cls, attr, original)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    ranges = [e for e in events if e.get("ph") == "X" and str(e.get("cat", "")).lower() == "user_annotation"]
    calls = [e for e in events if e.get("ph") == "X" and str(e.get("cat", "")).lower() in ("cuda_runtime", "cuda_driver")
             and re.search(r"Launch|Memcpy|Memset", str(e.get("name", "")))]
    counts: dict = {}
    for call in calls:
        ts, tid = float(call.get("ts", 0)), call.get("tid")
        best, best_dur = "(other)", float("inf")
        for r in ranges:
            start, dur = float(r.get("ts", 0)), float(r.get("dur", 0))
            if r.get("tid") == tid and start <= ts <= start + dur and dur < best_dur:
                best, best_dur = str(r.get("name")), dur
        counts[best] = counts.get(best, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    calls_per_range: dict = {}
    for r in ranges:
        calls_per_range[str(r.get("name"))] = calls_per_range.get(str(r.get("name")), 0) + 1
    del torch
    return {"launch_calls": len(calls), "by_op": [[k, v, calls_per_range.get(k, 0)] for k, v in ranked[:top]],
            "note": "[op, launch calls in one step, times the op ran]"}


def launch_counter_selftest(sync) -> dict:
    """Check that the profiler counts CuPy launches: N calls of a CuPy kernel must give N."""
    import cupy as cp  # noqa: PLC0415

    a = cp.ones(1 << 16, dtype=cp.float32)
    kernel = backend.elementwise_kernel("minires_selftest_axpy", "T x", "T y", "y = x * (T)2 + (T)1")
    kernel(a)  # compile outside the trace
    sync()
    expected = 10

    def run():
        for _ in range(expected):
            kernel(a)

    got = count_launches(run, sync)
    return {"expected_kernels": expected, "counted_kernels": got["kernels"], "ok": got["kernels"] == expected}


# --- CUDA graphs -----------------------------------------------------------------------------------

def _graph_nodes(graph) -> dict:
    """Node counts from the graph's DOT dump (verbose): ``total`` node definitions and counts by type.

    A second, independent launch count: every kernel the captured step launches is one
    ``KERNEL`` node (memcpy/memset nodes are counted separately).
    """
    try:
        try:
            text = graph.debug_dot_str(1)  # cudaGraphDebugDotFlagsVerbose
        except TypeError:
            text = graph.debug_dot_str()
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    kinds: dict = {"total": len(re.findall(r'^\s*"?[A-Za-z0-9_]*node[A-Za-z0-9_]*"?\s*\[', text, flags=re.M))}
    for match in re.finditer(r'label="\{?\s*(KERNEL|MEMCPY|MEMSET|HOST|EVENT_RECORD|WAIT_EVENT|MEM_ALLOC|MEM_FREE|'
                             r'EMPTY|GRAPH)', text):
        kinds[match.group(1)] = kinds.get(match.group(1), 0) + 1
    return kinds


def _snapshot(case: MiniresCase):
    arrays = [p.data for p in case.model.parameters()] + [b.data for b in case.model.buffers() if b is not None]
    arrays += [s["momentum_buffer"] for s in case.opt.state.values() if s.get("momentum_buffer") is not None]
    return arrays, [a.copy() for a in arrays]


def _restore(snapshot) -> None:
    arrays, copies = snapshot
    for a, c in zip(arrays, copies):
        a[...] = c


def _micro_segments(case: MiniresCase):
    """Single library calls and short kernel chains at the first stage's shapes, each captured alone.

    They show which pieces a CUDA graph can hold when a whole step cannot (a cuBLAS GEMM, the
    im2col gather, a fused batch norm + ReLU, the fused SGD update) and what replaying each saves.
    """
    import cupy as cp  # noqa: PLC0415

    from minires.kernels import im2col as im2col_kernels  # noqa: PLC0415
    from minires.kernels import norm as norm_kernels  # noqa: PLC0415

    n = case.x.shape[0]
    x = cp.random.standard_normal((n, 16, 32, 32), dtype=cp.float32)
    w = cp.random.standard_normal((16, 16 * 9), dtype=cp.float32)
    cols = im2col_kernels.im2col(x, 3, 3, 1, 1, 1, 1).reshape(n, 16 * 9, 32 * 32)
    gamma, beta = cp.ones(16, cp.float32), cp.zeros(16, cp.float32)
    params = norm_kernels.BatchNormParams(gamma, beta, cp.zeros(16, cp.float32), cp.ones(16, cp.float32),
                                          training=True, relu=True)
    yield "cublas_matmul", lambda: cp.matmul(w, cols)
    yield "im2col_kernel", lambda: im2col_kernels.im2col(x, 3, 3, 1, 1, 1, 1)
    yield "batch_norm_relu_forward", lambda: norm_kernels.batch_norm_forward(x, params).out


def graph_experiment(case: MiniresCase, steps: int, sync) -> dict:
    """Try to capture each segment of a training step into a CUDA graph; replay and time what captures."""
    import cupy as cp  # noqa: PLC0415

    segments = dict(_micro_segments(case))
    segments.update({
        "inference": case.infer,
        "forward_loss": case.forward_loss,
        "forward_backward": case.forward_backward,
        "sgd_step": case.opt.step,  # the gradients left by forward_backward
        "train_step": case.step,
    })
    results = {}
    for name, fn in segments.items():
        entry = results[name] = {}
        pool = cp.cuda.MemoryPool()
        stream = cp.cuda.Stream(non_blocking=True)
        try:
            with stream:
                # warm-up and capture allocate from a private pool that nothing else uses
                # afterwards, so the graph's scratch memory is never handed to other arrays
                with cp.cuda.using_allocator(pool.malloc):
                    for _ in range(3):  # compile kernels, fill the pool and the SGD pointer-table cache
                        fn()
                    stream.synchronize()
                    captured_out, graph, capture_error = None, None, None
                    stream.begin_capture()
                    try:
                        captured_out = fn()
                    except Exception as exc:  # noqa: BLE001
                        capture_error = exc
                    finally:
                        try:
                            graph = stream.end_capture()
                        except Exception as exc:  # noqa: BLE001
                            if capture_error is None:
                                capture_error = exc
                            graph = None
                if capture_error is not None or graph is None:
                    entry["captured"] = False
                    entry.update(_error(capture_error) if capture_error else {"error": "end_capture returned None"})
                    continue
                entry["captured"] = True
                entry["graph_nodes"] = _graph_nodes(graph)
                snap = _snapshot(case) if name == "train_step" else None
                graph.upload(stream)
                graph.launch(stream)
                stream.synchronize()

                def replay():
                    graph.launch(stream)

                def stream_sync():
                    stream.synchronize()

                eager_s = _timed(fn, steps, stream_sync)
                replay_s = _timed(replay, steps, stream_sync)
                entry.update(eager_ms=eager_s * 1e3, replay_ms=replay_s * 1e3, speedup=eager_s / replay_s)
                if snap is not None:
                    # same start state: three eager steps vs three replays
                    _restore(snap)
                    eager_losses = [_loss_value(fn()) for _ in range(3)]
                    _restore(snap)
                    graph_losses = []
                    for _ in range(3):
                        graph.launch(stream)
                        stream.synchronize()
                        graph_losses.append(_loss_value(captured_out))
                    entry["eager_losses"] = eager_losses
                    entry["replay_losses"] = graph_losses
                    entry["max_loss_diff"] = max(abs(a - b) for a, b in zip(eager_losses, graph_losses))
                    _restore(snap)
                elif name == "inference" or backend.is_cupy_array(captured_out):
                    def host(a):
                        return backend.as_numpy(a.data if isinstance(a, mr.Tensor) else a)

                    eager = host(fn())
                    graph.launch(stream)
                    stream.synchronize()
                    entry["max_output_diff"] = float(np.max(np.abs(host(captured_out) - eager)))
        except Exception as exc:  # noqa: BLE001
            entry.setdefault("captured", False)
            entry.update(_error(exc))
        finally:
            stream.synchronize()
    sync()
    return results


# --- one model ---------------------------------------------------------------------------------------

def run_model(name: str, args) -> dict:
    """Every measurement of one model; each part fails soft into an ``error`` entry."""
    result: dict = {"model": name, "batch_size": args.batch_size}
    device = args.device
    images, labels = _batch(args.batch_size)

    def sync():
        _sync(device)

    try:
        mcase = MiniresCase(name, args.batch_size, device, images, labels)
    except Exception as exc:  # noqa: BLE001
        result["minires_setup"] = _error(exc)
        return result
    tcase = None
    if not args.skip_torch:
        try:
            tcase = TorchCase(name, device, images, labels, mcase.state)
        except Exception as exc:  # noqa: BLE001
            result["torch_setup"] = _error(exc)

    # correctness: first loss and the loss after one SGD step, side by side
    try:
        check = {"minires_losses": [_loss_value(mcase.step()) for _ in range(2)]}
        if tcase is not None:
            check["torch_losses"] = [_loss_value(tcase.step()) for _ in range(2)]
            check["max_abs_diff"] = max(abs(a - b) for a, b in zip(check["minires_losses"], check["torch_losses"]))
        result["check"] = check
    except Exception as exc:  # noqa: BLE001
        result["check"] = _error(exc)

    for kind in ("train", "infer"):
        entry = result[kind] = {}
        mfn = mcase.step if kind == "train" else mcase.infer
        tfn = None if tcase is None else (tcase.step if kind == "train" else tcase.infer)
        try:
            for _ in range(args.warmup):
                mfn()
                if tfn is not None:
                    tfn()
            mtimes, ttimes, ratios = [], [], []
            for r in range(args.rounds):
                order = [("m", mfn), ("t", tfn)] if r % 2 == 0 else [("t", tfn), ("m", mfn)]
                times = {}
                for tag, fn in order:
                    if fn is not None:
                        times[tag] = _timed(fn, args.steps, sync)
                mtimes.append(times["m"])
                if "t" in times:
                    ttimes.append(times["t"])
                    ratios.append(times["m"] / times["t"])
            entry["minires_ms"] = statistics.median(mtimes) * 1e3
            entry["minires_ms_rounds"] = [round(t * 1e3, 3) for t in mtimes]
            entry["images_per_s"] = args.batch_size / statistics.median(mtimes)
            if ttimes:
                entry["torch_ms"] = statistics.median(ttimes) * 1e3
                entry["torch_ms_rounds"] = [round(t * 1e3, 3) for t in ttimes]
                entry["ratio_median"] = statistics.median(ratios)
                entry["ratios"] = [round(x, 3) for x in ratios]
        except Exception as exc:  # noqa: BLE001
            entry.update(_error(exc))

    if device != "cpu":
        try:
            import cupy as cp  # noqa: PLC0415

            result["cupy_pool_used_mib"] = cp.get_default_memory_pool().used_bytes() / 2**20
            result["cupy_pool_total_mib"] = cp.get_default_memory_pool().total_bytes() / 2**20
        except Exception as exc:  # noqa: BLE001
            result["memory"] = _error(exc)
        if not args.skip_launches and name in args.by_op_models:
            try:
                result["launches_by_op"] = launches_by_op(mcase, sync)
            except Exception as exc:  # noqa: BLE001
                result["launches_by_op"] = _error(exc)
        if not args.skip_launches:
            for label, fn in (("minires_train_step", mcase.step), ("minires_inference", mcase.infer)) + (
                    (("torch_train_step", tcase.step), ("torch_inference", tcase.infer)) if tcase else ()):
                try:
                    result.setdefault("launches", {})[label] = count_launches(fn, sync)
                except Exception as exc:  # noqa: BLE001
                    result.setdefault("launches", {})[label] = _error(exc)
    del mcase, tcase
    return result


def run_graphs(name: str, args) -> dict:
    """The CUDA graph experiment on a fresh minires model (run after every timing, so a capture
    that upsets the CUDA context cannot cost the other measurements)."""
    images, labels = _batch(args.batch_size)
    case = MiniresCase(name, args.batch_size, args.device, images, labels)
    return graph_experiment(case, args.steps, lambda: _sync(args.device))


# --- report ----------------------------------------------------------------------------------------

def _fmt(value, spec=".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"## GPU speed: minires (CuPy) vs PyTorch eager (cuDNN), {env.get('date_utc')} UTC",
        "",
        f"GPU: {env.get('gpu', '-')}; CuPy {env.get('cupy')}, PyTorch {env.get('torch')} (CUDA {env.get('torch_cuda')}, "
        f"cuDNN {env.get('cudnn')}), NumPy {env.get('numpy')}, Python {env.get('python')}.",
        f"Command: `{env.get('command')}`; batch {report['args']['batch_size']}, float32, "
        f"{report['args']['rounds']} alternated rounds x {report['args']['steps']} steps, median ratios.",
        "",
        "| model | train minires ms | train torch ms | train ratio | infer minires ms | infer torch ms | infer ratio "
        "| launches/train step (minires / torch; minires syncs) | loss check (minires vs torch, 2 steps) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["models"]:
        tr, inf = r.get("train", {}), r.get("infer", {})
        launches = r.get("launches", {})
        ml = launches.get("minires_train_step", {}).get("total")
        syncs = launches.get("minires_train_step", {}).get("host_syncs")
        tl = launches.get("torch_train_step", {}).get("total")
        check = r.get("check", {})
        if "minires_losses" in check:
            chk = "minires " + ", ".join(f"{v:.5f}" for v in check["minires_losses"])
            if "torch_losses" in check:
                chk += "; torch " + ", ".join(f"{v:.5f}" for v in check["torch_losses"])
        else:
            chk = check.get("error", "-")
        lines.append(
            f"| {r['model']} | {_fmt(tr.get('minires_ms'))} | {_fmt(tr.get('torch_ms'))} | "
            f"{_fmt(tr.get('ratio_median'))} | {_fmt(inf.get('minires_ms'))} | {_fmt(inf.get('torch_ms'))} | "
            f"{_fmt(inf.get('ratio_median'))} | {ml if ml is not None else '-'} / {tl if tl is not None else '-'}"
            f"{'' if syncs is None else f' ({len(syncs)} host syncs)'} | "
            f"{chk} |")
    errors = []
    for r in report["models"]:
        for key, value in r.items():
            if isinstance(value, dict) and "error" in value:
                errors.append(f"- {r['model']} {key}: {value['error']}")
            elif isinstance(value, dict):
                for sub, v in value.items():
                    if isinstance(v, dict) and "error" in v:
                        errors.append(f"- {r['model']} {key}/{sub}: {v['error']}")
    selftest = report.get("launch_counter_selftest")
    if selftest:
        lines += ["", f"Launch counter self-test (torch.profiler/CUPTI sees CuPy launches): {selftest}"]
    for r in report["models"]:
        graphs = r.get("graphs")
        if isinstance(graphs, dict) and "error" not in graphs:
            lines += ["", f"CUDA graph capture, {r['model']} (replay / torch: the replayed segment against PyTorch's "
                          "eager train step or inference):", "",
                      "| segment | captured | eager ms | replay ms | speedup | replay / torch | graph nodes | check |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            torch_ms = {"train_step": r.get("train", {}).get("torch_ms"), "inference": r.get("infer", {}).get("torch_ms")}
            for seg, g in graphs.items():
                check = g.get("max_loss_diff", g.get("max_output_diff"))
                vs_torch = (g["replay_ms"] / torch_ms[seg]) if (g.get("replay_ms") and torch_ms.get(seg)) else None
                lines.append(f"| {seg} | {g.get('captured')} | {_fmt(g.get('eager_ms'))} | {_fmt(g.get('replay_ms'))} "
                             f"| {_fmt(g.get('speedup'))} | {_fmt(vs_torch)} | {g.get('graph_nodes', '-')} | "
                             f"{'-' if check is None else f'max diff {check:.3g}'}"
                             f"{'' if g.get('captured') else ' ' + g.get('error', '')[:160]} |")
            if any(str(g.get("error", "")).endswith(CUBLAS_CAPTURE_REFUSAL) for g in graphs.values()):
                lines += ["", "Segments that run a GEMM are not captured: this CuPy refuses cuBLAS calls during "
                              "stream capture (NotImplementedError above), a limitation of CuPy's cuBLAS binding; "
                              "minires' GraphedStep then runs such steps eagerly. Segments without GEMMs replay."]
    for r in report["models"]:
        top = r.get("launches", {}).get("minires_train_step", {}).get("top_kernels_by_time")
        if top:
            lines += ["", f"Top GPU kernels of one minires {r['model']} training step (name, count, total us):", ""]
            lines += [f"- `{k}` x{c}: {us} us" for k, c, us in top]
    for r in report["models"]:
        by_op = r.get("launches_by_op", {}).get("by_op")
        if by_op:
            lines += ["", f"Launch calls of one minires {r['model']} training step by op "
                          f"({r['launches_by_op'].get('launch_calls')} in all; op, launches, calls of the op):", ""]
            lines += [f"- `{k}`: {n} launches over {c} calls" for k, n, c in by_op]
    if errors:
        lines += ["", "Errors:", ""] + errors
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20,resnet56,resnet110", help="comma-separated model names")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds (median ratio over rounds)")
    parser.add_argument("--steps", type=int, default=10, help="timed calls per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="'cuda' (default) or 'cpu' for a smoke test")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="output folder (default $OUT or .)")
    parser.add_argument("--skip-torch", action="store_true", help="time minires only")
    parser.add_argument("--skip-launches", action="store_true", help="do not count kernel launches")
    parser.add_argument("--graphs", dest="graphs", action="store_true", default=True,
                        help="run the CUDA graph capture experiment (default on)")
    parser.add_argument("--no-graphs", dest="graphs", action="store_false")
    parser.add_argument("--graph-models", default="resnet20", help="models for the graph experiment")
    parser.add_argument("--by-op-models", default="resnet20", help="models whose launches are attributed to ops")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny smoke run: resnet20, batch 8, 1 round of 1 step, no warm-up")
    args = parser.parse_args(argv)
    args.device = backend.parse_device(args.device)
    if args.dry_run:
        args.models, args.batch_size, args.rounds, args.steps, args.warmup = "resnet20", 8, 1, 1, 0
    args.graph_models = [m.strip() for m in args.graph_models.split(",") if m.strip()]
    args.by_op_models = [m.strip() for m in args.by_op_models.split(",") if m.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    os.makedirs(args.out, exist_ok=True)
    if args.skip_torch is False:
        try:
            import torch  # noqa: F401, PLC0415
        except ImportError:
            LOG("PyTorch is not installed: timing minires only")
            args.skip_torch = True

    report = {"environment": environment(args.device), "args": {k: v for k, v in vars(args).items()},
              "models": []}
    LOG(json.dumps(report["environment"], indent=1))
    if args.device != "cpu" and not args.skip_launches:
        try:
            report["launch_counter_selftest"] = launch_counter_selftest(lambda: _sync(args.device))
        except Exception as exc:  # noqa: BLE001
            report["launch_counter_selftest"] = _error(exc)
        LOG(f"launch counter self-test: {report['launch_counter_selftest']}")

    json_path = os.path.join(args.out, "gpu_speed.json")
    md_path = os.path.join(args.out, "gpu_speed.md")
    for name in models:
        start = time.perf_counter()
        LOG(f"--- {name} ---")
        try:
            result = run_model(name, args)
        except Exception as exc:  # noqa: BLE001
            result = {"model": name, **_error(exc)}
        result["seconds"] = round(time.perf_counter() - start, 1)
        report["models"].append(result)
        summary = {k: result.get(k) for k in ("check", "train", "infer")}
        LOG(json.dumps(summary, default=str)[:1500])
        # write after every model so a time-out keeps what was measured
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1, default=str)
        with open(md_path, "w") as f:
            f.write(markdown(report))
    if args.graphs and args.device != "cpu":
        for result in report["models"]:
            if result["model"] not in args.graph_models:
                continue
            LOG(f"--- CUDA graphs: {result['model']} ---")
            try:
                result["graphs"] = run_graphs(result["model"], args)
            except Exception as exc:  # noqa: BLE001
                result["graphs"] = _error(exc)
            LOG(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "traceback"} if isinstance(v, dict) else v
                            for k, v in result["graphs"].items()}, default=str)[:3000])
            with open(json_path, "w") as f:
                json.dump(report, f, indent=1, default=str)
            with open(md_path, "w") as f:
                f.write(markdown(report))
    LOG(markdown(report))
    LOG(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
