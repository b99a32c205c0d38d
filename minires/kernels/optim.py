"""Fused multi-tensor SGD update: every parameter of a group in one kernel launch.

The math is ``torch.optim.SGD``'s (and :func:`minires.optim.sgd.sgd_update_`'s), with
each intermediate rounded to the parameter dtype in the same order::

    d = p * weight_decay + g        (d = p * weight_decay - g with maximize; d = g, or -g, without decay)
    buf = d                                           first step with momentum
    buf = buf * momentum + (1 - dampening) * d        later steps (``+ d`` when dampening == 0)
    d = buf * momentum + d   if nesterov   else   d = buf     (when momentum != 0)
    p = p - lr * d

The CPU function :func:`sgd_multi_tensor_cpu` applies it with NumPy, tensor by tensor.
The GPU twin :func:`sgd_multi_tensor_gpu` is one ``RawKernel`` launch for a whole list of
tensors (the "multi-tensor apply" layout): a small int64 device table holds the
parameter, gradient and buffer pointers, the sizes, and for each thread block the tensor
and chunk it updates. The table is cached by its contents, so a training loop whose
gradients come back at the same pool addresses uploads nothing per step (inside CUDA-graph
capture the upload is recorded from a pinned host buffer kept for the process's life); the kernel is
compiled with ``--fmad=false`` so that its float32/float64 results equal NumPy's bit for
bit (no fused multiply-adds that NumPy would not do).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import backend

#: elements per thread block (a block never spans two tensors)
CHUNK = 4096
THREADS = 256
_TABLE_CACHE_SIZE = 16

_SGD_SOURCE = r"""
template <typename T>
__device__ __forceinline__ void minires_sgd_body(
        const long long* __restrict__ table, const int n_tensors, const int n_blocks, const int chunk,
        const T lr, const T momentum, const T dampening_factor, const T weight_decay,
        const int nesterov, const int maximize, const int first, const int use_momentum,
        const int use_dampening) {
    // table: [param ptrs | grad ptrs | buffer ptrs | sizes] (n_tensors each),
    //        [tensor of block | chunk of block] (n_blocks each)
    const long long b = blockIdx.x;
    const long long t = table[4LL * n_tensors + b];
    const long long c = table[4LL * n_tensors + n_blocks + b];
    T* __restrict__ p = reinterpret_cast<T*>(table[t]);
    const T* __restrict__ g = reinterpret_cast<const T*>(table[n_tensors + t]);
    T* __restrict__ buf = reinterpret_cast<T*>(table[2LL * n_tensors + t]);
    const long long n = table[3LL * n_tensors + t];
    const long long start = c * (long long)chunk;
    const long long end = min(start + (long long)chunk, n);
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        T d = g[i];
        if (weight_decay != (T)0) {
            const T decay = p[i] * weight_decay;
            d = maximize ? decay - d : decay + d;
        } else if (maximize) {
            d = -d;
        }
        if (use_momentum) {
            T m;
            if (first) {
                m = d;
            } else {
                m = buf[i] * momentum;
                m = use_dampening ? m + dampening_factor * d : m + d;
            }
            buf[i] = m;
            if (nesterov) {
                const T s = m * momentum;
                d = s + d;
            } else {
                d = m;
            }
        }
        const T step = lr * d;
        p[i] = p[i] - step;
    }
}

extern "C" __global__ void minires_sgd_multi_f32(
        const long long* table, int n_tensors, int n_blocks, int chunk, float lr, float momentum,
        float dampening_factor, float weight_decay, int nesterov, int maximize, int first,
        int use_momentum, int use_dampening) {
    minires_sgd_body<float>(table, n_tensors, n_blocks, chunk, lr, momentum, dampening_factor, weight_decay,
                            nesterov, maximize, first, use_momentum, use_dampening);
}

extern "C" __global__ void minires_sgd_multi_f64(
        const long long* table, int n_tensors, int n_blocks, int chunk, double lr, double momentum,
        double dampening_factor, double weight_decay, int nesterov, int maximize, int first,
        int use_momentum, int use_dampening) {
    minires_sgd_body<double>(table, n_tensors, n_blocks, chunk, lr, momentum, dampening_factor, weight_decay,
                             nesterov, maximize, first, use_momentum, use_dampening);
}
"""

_KERNEL_NAMES = {np.dtype(np.float32): "minires_sgd_multi_f32", np.dtype(np.float64): "minires_sgd_multi_f64"}
_table_cache: OrderedDict = OrderedDict()
#: tables uploaded inside CUDA-graph capture, with their pinned sources: kept for the process's life
_captured_tables: list = []


def _check_lists(params, grads, buffers) -> None:
    if not (len(params) == len(grads) == len(buffers)):
        raise ValueError(f"sgd_multi_tensor: expected as many gradients and buffers as parameters, got "
                         f"{len(params)} parameters, {len(grads)} gradients, {len(buffers)} buffers")
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.shape != g.shape:
            raise ValueError(f"sgd_multi_tensor: gradient {i} has shape {g.shape}, its parameter {p.shape}")
        if p.dtype != g.dtype:
            raise TypeError(f"sgd_multi_tensor: gradient {i} has dtype {g.dtype}, its parameter {p.dtype}")


# --- CPU ---------------------------------------------------------------------------------

def sgd_multi_tensor_cpu(params, grads, buffers, *, lr: float, momentum: float, dampening: float,
                         weight_decay: float, nesterov: bool, maximize: bool = False) -> list:
    """Apply the SGD update (module docstring) to NumPy arrays in place, tensor by tensor.

    Args:
        params: list of parameter arrays, updated in place.
        grads: list of gradient arrays (not modified).
        buffers: list of momentum buffers (updated in place) or ``None`` entries (first step).
        lr, momentum, dampening, weight_decay, nesterov, maximize: ``torch.optim.SGD``'s options.

    Returns:
        The list of momentum buffers (new arrays where an entry was ``None``; all ``None``
        without momentum).
    """
    _check_lists(params, grads, buffers)
    out = []
    for p, g, buf in zip(params, grads, buffers):
        t = p.dtype.type
        if weight_decay != 0:
            decay = p * t(weight_decay)
            d = decay - g if maximize else decay + g
        else:
            d = -g if maximize else g
        if momentum != 0:
            if buf is None:
                buf = np.array(d, copy=True)
            else:
                m = buf * t(momentum)
                buf[...] = m + t(1 - dampening) * d if dampening != 0 else m + d
            d = buf * t(momentum) + d if nesterov else buf
        else:
            buf = None
        p -= t(lr) * d
        out.append(buf)
    return out


# --- GPU (CuPy) --------------------------------------------------------------------------

def _device_table(cp, params, grads, buffers):
    """The int64 pointer/size/block table on the device (cached by its contents)."""
    n_tensors = len(params)
    sizes = np.fromiter((p.size for p in params), dtype=np.int64, count=n_tensors)
    blocks_per = np.maximum(1, -(-sizes // CHUNK))
    block_tensor = np.repeat(np.arange(n_tensors, dtype=np.int64), blocks_per)
    starts = np.repeat(np.cumsum(blocks_per) - blocks_per, blocks_per)
    block_chunk = np.arange(block_tensor.size, dtype=np.int64) - starts
    host = np.concatenate([
        np.fromiter((p.data.ptr for p in params), dtype=np.int64, count=n_tensors),
        np.fromiter((g.data.ptr for g in grads), dtype=np.int64, count=n_tensors),
        np.fromiter((b.data.ptr for b in buffers), dtype=np.int64, count=n_tensors),
        sizes, block_tensor, block_chunk,
    ])
    key = (cp.cuda.Device().id, host.tobytes())
    table = _table_cache.get(key)
    if table is None:
        stream = cp.cuda.get_current_stream()
        if stream.is_capturing():
            # captured as a copy node that every replay repeats: its source must be a pinned
            # host buffer that lives (unchanged) as long as the process, never a staging buffer
            import cupyx  # noqa: PLC0415

            pinned = cupyx.empty_pinned(host.shape, dtype=host.dtype)
            pinned[...] = host
            table = cp.empty(host.shape, dtype=host.dtype)
            table.set(pinned, stream=stream)
            _captured_tables.append((table, pinned))
        else:
            table = cp.asarray(host)
        _table_cache[key] = table
        if len(_table_cache) > _TABLE_CACHE_SIZE:
            _table_cache.popitem(last=False)
    else:
        _table_cache.move_to_end(key)
    return table, int(block_tensor.size)


def sgd_multi_tensor_gpu(params, grads, buffers, *, lr: float, momentum: float, dampening: float,
                         weight_decay: float, nesterov: bool, maximize: bool = False) -> list:
    """CuPy twin of :func:`sgd_multi_tensor_cpu`: one kernel launch per dtype and buffer state.

    Parameters must be C-contiguous CuPy arrays of float32 or float64 on the current
    device; non-contiguous gradients are made contiguous first. Missing momentum buffers
    are allocated (uninitialised: the first-step launch writes them).

    Returns:
        The list of momentum buffers (all ``None`` without momentum).
    """
    cp = backend.cupy_module()
    _check_lists(params, grads, buffers)
    use_momentum = momentum != 0
    result = list(buffers) if use_momentum else [None] * len(params)
    batches: dict = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.dtype not in _KERNEL_NAMES:
            raise TypeError(f"sgd_multi_tensor_gpu: parameter {i} has dtype {p.dtype}; expected float32 or float64")
        if not p.flags.c_contiguous:
            raise ValueError(f"sgd_multi_tensor_gpu: parameter {i} is not C-contiguous")
        if p.size == 0:
            continue
        first = use_momentum and buffers[i] is None
        if first:
            result[i] = cp.empty_like(p)
        batches.setdefault((p.dtype, first), []).append(i)
    for (dtype, first), indices in batches.items():
        t = dtype.type
        ps = [params[i] for i in indices]
        gs = [grads[i] if grads[i].flags.c_contiguous else cp.ascontiguousarray(grads[i]) for i in indices]
        # without momentum the buffer slot is never read or written; point it at the parameter
        bs = [result[i] if use_momentum else params[i] for i in indices]
        table, n_blocks = _device_table(cp, ps, gs, bs)
        kernel = backend.raw_kernel(_KERNEL_NAMES[dtype], _SGD_SOURCE, ("--fmad=false",))
        kernel((n_blocks,), (THREADS,),
               (table, np.int32(len(ps)), np.int32(n_blocks), np.int32(CHUNK), t(lr), t(momentum),
                t(1 - dampening), t(weight_decay), np.int32(bool(nesterov)), np.int32(bool(maximize)),
                np.int32(first), np.int32(use_momentum), np.int32(dampening != 0)))
    return result


# --- dispatcher ----------------------------------------------------------------------------

def sgd_multi_tensor(params, grads, buffers, *, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                     weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> list:
    """One SGD step (``torch.optim.SGD``'s math) for a list of parameters, in place.

    On CuPy arrays the whole list is updated by one fused kernel launch (per dtype); on
    NumPy arrays tensor by tensor with the same rounding.

    Args:
        params: parameter arrays (all NumPy or all CuPy), updated in place.
        grads: their gradients, same shapes and dtypes (not modified).
        buffers: momentum buffers or ``None`` entries before the first step.
        lr: learning rate.
        momentum: momentum factor (0 disables the buffers).
        dampening: dampening of the momentum.
        weight_decay: L2 penalty added to the gradient.
        nesterov: Nesterov momentum.
        maximize: ascend instead of descend.

    Returns:
        The new list of momentum buffers.

    Example:
        >>> bufs = sgd_multi_tensor(ps, gs, [None] * len(ps), lr=0.1, momentum=0.9)
    """
    options = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                   maximize=maximize)
    if params and backend.is_cupy_array(params[0]):
        return sgd_multi_tensor_gpu(params, grads, buffers, **options)
    return sgd_multi_tensor_cpu(params, grads, buffers, **options)


def clear_table_cache() -> None:
    """Drop the cached device pointer tables (e.g. before freeing the memory pool)."""
    _table_cache.clear()


__all__ = ["sgd_multi_tensor", "sgd_multi_tensor_cpu", "sgd_multi_tensor_gpu", "clear_table_cache", "CHUNK"]
