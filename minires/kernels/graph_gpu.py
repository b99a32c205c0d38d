"""CUDA-graph capture and replay of a whole step (CuPy), with static input buffers.

A training step on the GPU issues a few hundred small kernel launches, and at ResNet sizes
the host's Python and CuPy overhead per launch, not the GPU, sets the pace. A CUDA graph
records the launches of one step once and replays them with a single call.

:class:`GraphedStep` wraps ``fn(*arrays) -> tuple of device arrays``. For each new key
(input shapes/dtypes plus a caller-given ``variant``, for example the learning rate that
the captured optimizer kernel bakes in) it

1. copies the inputs into static buffers and runs ``fn`` once eagerly on them (a real
   step: its results are returned; it also compiles kernels and fills caches),
2. captures a second call of ``fn`` on the same buffers into a graph (capturing executes
   nothing), on a side stream and with a private memory pool that nothing else
   allocates from, so the graph's scratch memory is never handed to other arrays;

every later call with that key copies the inputs into the static buffers and replays the
graph. The outputs of a replay are the same static arrays each time (read or copy them
before the next call). The side stream is ordered after the caller's stream before a
replay and the caller's stream after it, with events (no host synchronisation).

If capture fails (an operation that cannot be captured, or a host synchronisation inside
``fn``), the failure is recorded in :attr:`GraphedStep.error` and every call runs ``fn``
eagerly from then on.

Known limitation (verified with CuPy 14.2.0 on an H200): CuPy refuses any cuBLAS call made
while a stream is capturing (``NotImplementedError: calling cuBLAS API during stream capture
is currently unsupported``). Every convolution and linear layer of minires runs its GEMM
through cuBLAS (``cupy.matmul``), so a training or inference step of a real model cannot
be captured with such a CuPy: :class:`GraphedStep` recognises exactly that refusal, sets
:attr:`GraphedStep.unsupported` and reports it as "unsupported by CuPy's cuBLAS binding";
the step then runs eagerly (same results, no speed-up). Steps without GEMMs (im2col, batch
norm, the fused SGD update) do capture and replay (see ``benchmarks/gpu_speed.py``).

Requirements on ``fn``: it reads its inputs only from its arguments, keeps its state in
device arrays updated in place (parameters, optimizer buffers, running statistics), and
performs no host synchronisation; Python-side values it depends on must be part of the
``variant`` key.
"""

from __future__ import annotations

from .. import backend

#: The exact message of CuPy's ``NotImplementedError`` for a cuBLAS call during stream capture.
CUBLAS_CAPTURE_REFUSAL = "calling cuBLAS API during stream capture is currently unsupported"
#: How :attr:`GraphedStep.error` starts when capture failed on exactly that refusal.
CUBLAS_UNSUPPORTED = "unsupported by CuPy's cuBLAS binding"


def is_cublas_capture_refusal(error: BaseException) -> bool:
    """Whether ``error`` is exactly CuPy's refusal of a cuBLAS call during stream capture.

    Args:
        error: the exception raised while capturing.

    Returns:
        True only for a ``NotImplementedError`` whose message is :data:`CUBLAS_CAPTURE_REFUSAL`
        (any other failure is a real capture problem, not this known limitation).
    """
    return isinstance(error, NotImplementedError) and str(error).strip() == CUBLAS_CAPTURE_REFUSAL


def describe_capture_error(error: BaseException) -> str:
    """The text stored in :attr:`GraphedStep.error` for a capture failure ``error``.

    Args:
        error: the exception raised while capturing (or ending the capture).

    Returns:
        ``"<Type>: <message>"``, prefixed with :data:`CUBLAS_UNSUPPORTED` and an explanation
        when :func:`is_cublas_capture_refusal` holds.
    """
    text = f"{type(error).__name__}: {error}"
    if is_cublas_capture_refusal(error):
        return (f"{CUBLAS_UNSUPPORTED} (this CuPy refuses cuBLAS calls during CUDA-graph capture and every "
                f"convolution/linear GEMM is a cuBLAS call, so the step runs eagerly): {text}")
    return text


class _Entry:
    __slots__ = ("graph", "pool", "inputs", "outputs")

    def __init__(self, graph, pool, inputs, outputs):
        self.graph, self.pool, self.inputs, self.outputs = graph, pool, inputs, outputs


class GraphedStep:
    """Replay ``fn`` from a CUDA graph, capturing once per input signature and ``variant``.

    Args:
        fn: ``fn(*device_arrays) -> tuple of device arrays``; see the module docstring.
        max_graphs: captures kept at most; calls with further keys run eagerly.
        log: optional callable for one-line messages (capture, failure).

    Attributes:
        error: why capturing failed (then every call runs eagerly), or ``None``; starts with
            :data:`CUBLAS_UNSUPPORTED` when the failure is CuPy's refusal of cuBLAS during capture.
        unsupported: True when capture failed on exactly that known CuPy limitation
            (:func:`is_cublas_capture_refusal`), False otherwise.
        replays: number of calls served by a replay.
        eager_calls: number of calls run eagerly (first call per key included).

    Example:
        >>> step = GraphedStep(lambda x, y: train_step(x, y))
        >>> loss, correct = step(x, y, variant=lr)
    """

    def __init__(self, fn, max_graphs: int = 8, log=None):
        self.fn = fn
        self.max_graphs = int(max_graphs)
        self.log = log
        self.error: str | None = None
        self.unsupported = False
        self.replays = 0
        self.eager_calls = 0
        self._entries: dict = {}
        # private pools of failed captures: arrays made by their eager step (momentum buffers,
        # for example) live on, so their pool must too
        self._kept_pools: list = []
        self._stream = None

    def _key(self, arrays, variant):
        return tuple((a.shape, a.dtype.str) for a in arrays), variant

    def __call__(self, *arrays, variant=None):
        """Run one step on ``arrays`` (device arrays) and return ``fn``'s outputs."""
        key = self._key(arrays, variant)
        entry = self._entries.get(key)
        if entry is None:
            if self.error is not None or len(self._entries) >= self.max_graphs:
                self.eager_calls += 1
                return self.fn(*arrays)
            return self._capture(key, arrays)
        cp = backend.cupy_module()
        caller = cp.cuda.get_current_stream()
        self._stream.wait_event(caller.record())
        with self._stream:
            for static, a in zip(entry.inputs, arrays):
                static[...] = a
            entry.graph.launch(self._stream)
        caller.wait_event(self._stream.record())
        self.replays += 1
        return entry.outputs

    def _capture(self, key, arrays):
        cp = backend.cupy_module()
        if self._stream is None:
            self._stream = cp.cuda.Stream(non_blocking=True)
        caller = cp.cuda.get_current_stream()
        stream = self._stream
        stream.wait_event(caller.record())
        pool = cp.cuda.MemoryPool()
        graph = None
        with stream, cp.cuda.using_allocator(pool.malloc):
            inputs = tuple(cp.empty_like(a) for a in arrays)
            for static, a in zip(inputs, arrays):
                static[...] = a
            result = self.fn(*inputs)  # the eager step on this batch, on the static buffers
            eager = tuple(r.copy() for r in result)  # survive the capture below
            stream.synchronize()
            error = None
            stream.begin_capture()
            try:
                outputs = self.fn(*inputs)
            except Exception as exc:  # noqa: BLE001
                error, outputs = exc, None
            finally:
                try:
                    graph = stream.end_capture()
                except Exception as exc:  # noqa: BLE001
                    error = error or exc
                    graph = None
            if error is None and graph is not None:
                graph.upload(stream)
        caller.wait_event(stream.record())
        self.eager_calls += 1
        if error is not None or graph is None:
            self.error = describe_capture_error(error) if error is not None else "end_capture returned no graph"
            self.unsupported = error is not None and is_cublas_capture_refusal(error)
            self._kept_pools.append(pool)
            if self.log:
                self.log(f"CUDA graph capture failed, running the step eagerly from now on ({self.error})")
            return eager
        self._entries[key] = _Entry(graph, pool, inputs, tuple(outputs))
        if self.log:
            self.log(f"captured the step into CUDA graph {len(self._entries)} (key {key[1]!r})")
        return eager


__all__ = ["CUBLAS_CAPTURE_REFUSAL", "CUBLAS_UNSUPPORTED", "GraphedStep", "describe_capture_error",
           "is_cublas_capture_refusal"]
