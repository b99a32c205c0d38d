"""Fast CPU batch norm (optionally fused with a residual addition and ReLU) for channels-last arrays.

The reference kernels in :mod:`minires.kernels.norm` make one whole-array NumPy pass per
arithmetic step. When activations are stored
channels-last (the ``'nhwc'`` convolution of :mod:`minires.kernels.conv_fast` returns them
so), these functions compute the same results with

- the batch split across threads (:func:`minires.kernels.parallel.parallel_for`), and each
  thread's share walked in chunks of a few images that stay in the L2 cache while all of a
  step's passes run over them;
- per-channel sums as BLAS matrix-vector products (``ones @ X`` on the ``(pixels, C)``
  view) instead of strided reductions;
- per-channel scale/shift vectors tiled to one image's length (``H*W*C``), so every
  broadcast runs over long contiguous rows;
- as few passes as the arithmetic allows: the normalisation folded into
  ``(x - mean) * scale + bias`` where that is exact enough, the backward computed from
  ``x - mean``, the ReLU mask applied once.

:func:`conv_bn_eval_nhwc` goes further for inference: batch norm, addition and ReLU run
as the epilogue of the channels-last convolution, on each chunk of its output in cache.

Semantics, arguments and return values are those of the reference functions (PyTorch's
batch norm with biased batch variance, unbiased running variance; the fused ReLU's
gradient is 0 where ``out <= 0``, NaN passing as PyTorch). :func:`applies` says when the fast path is
taken; callers fall back to the reference otherwise.
"""

from __future__ import annotations

import threading

import numpy as np

from .activation import _SAME_SIZE_UINT, keep_where_cpu
from .conv_fast import is_channels_last
from .norm import update_running_stats
from .parallel import parallel_for, parallel_sum

#: target bytes of one chunk (a few images) so all passes over it hit the L2 cache
_CHUNK_BYTES = 1 << 20

_enabled = True


def set_fast_paths(enabled: bool) -> None:
    """Turn the channels-last batch-norm fast path on (default) or off (reference kernels only)."""
    global _enabled
    _enabled = bool(enabled)


def fast_paths_enabled() -> bool:
    """Whether :func:`applies` may return True."""
    return _enabled


def applies(*arrays) -> bool:
    """True when the fast path is on and every array is a non-empty 4-D float NumPy array
    stored channels-last (NHWC memory); ``None`` entries are ignored."""
    if not _enabled and not any(isinstance(a, SavedInput) for a in arrays):
        return False  # (a SavedInput from an earlier forward always goes back to this module)
    for a in arrays:
        if a is None or isinstance(a, SavedInput):
            continue
        if type(a) is not np.ndarray or a.dtype.kind != "f" or a.size == 0 or not is_channels_last(a):
            return False   # (an empty batch takes the reference kernels)
    return True


def _rows(a: np.ndarray) -> np.ndarray:
    """Channels-last ``(N, C, H, W)`` as a ``(N, H*W*C)`` view (one image per row)."""
    N, C, H, W = a.shape
    return a.transpose(0, 2, 3, 1).reshape(N, H * W * C)   # (explicit length: N may be 0)


def _new_like(a: np.ndarray) -> np.ndarray:
    """An empty channels-last array shaped like ``a`` and its ``(N, H*W*C)`` rows view."""
    N, C, H, W = a.shape
    out = np.empty((N, H, W, C), a.dtype)
    return out.transpose(0, 3, 1, 2), out.reshape(N, H * W * C)


def _chunk(a: np.ndarray) -> int:
    return max(1, _CHUNK_BYTES // max(1, a[0].nbytes))


class SavedInput:
    """What the channels-last batch norm keeps for its backward pass instead of ``x_hat``.

    ``x_hat = ((x - mean) - residual) * inv_std`` is an affine function of the input ``x``,
    which the autograd graph keeps alive anyway (it is the op's input); so rather than a
    second activation-sized array, the forward returns this recipe and the backward
    works from ``x - mean`` chunk by chunk in cache. That saves one activation per
    batch-norm layer (about 20% of the peak memory of a CIFAR ResNet's training step).

    ``x`` must not be modified in place between the forward and the backward pass.
    """

    __slots__ = ("x", "mean_t", "residual", "inv_std", "_residual_t", "_inv_t")

    def __init__(self, x, mean_t, residual, inv_std):
        """``mean_t``: the mean tiled to one image's row; ``residual`` (or ``None``) and
        ``inv_std``: per-channel ``(C,)`` vectors (tiled on first use by :meth:`rows`)."""
        self.x, self.mean_t, self.residual, self.inv_std = x, mean_t, residual, inv_std
        self._residual_t = self._inv_t = None

    @property
    def shape(self) -> tuple:
        return self.x.shape

    @property
    def dtype(self):
        return self.x.dtype

    def centred_rows(self, a: int, b: int, out: np.ndarray) -> np.ndarray:
        """``x - mean`` of images ``a:b`` as ``(b - a, H*W*C)`` rows, written into ``out``."""
        return np.subtract(_rows(self.x)[a:b], self.mean_t, out=out)

    def rows(self, a: int, b: int, out: np.ndarray) -> np.ndarray:
        """``x_hat`` of images ``a:b`` as ``(b - a, H*W*C)`` rows, written into ``out``."""
        if self._inv_t is None:  # only the exact normalisation and materialize() need these
            reps = self.x.shape[2] * self.x.shape[3]
            self._inv_t = np.tile(self.inv_std, reps)
            self._residual_t = None if self.residual is None else np.tile(self.residual, reps)
        self.centred_rows(a, b, out)
        if self._residual_t is not None:
            out -= self._residual_t
        out *= self._inv_t
        return out

    def materialize(self) -> np.ndarray:
        """The whole ``x_hat`` as a channels-last array."""
        x_hat, rows = _new_like(self.x)
        self.rows(0, self.x.shape[0], rows)
        return x_hat


#: the normalisation folds ``(x - mean - residual) * inv_std * weight + bias`` into
#: ``(x - mean') * scale + bias`` with ``mean' = mean + residual`` rounded once, when that
#: rounding moves no output by more than about ``_FOLD_LIMIT * 2**-24`` standard deviations
#: (``|mean'| * inv_std <= _FOLD_LIMIT``): three passes instead of five; channels whose
#: mean is far larger than their spread keep the exact two-step centring
_FOLD_LIMIT = 16.0


def _finish_rows(o, addend_rows, relu: bool) -> None:
    """The tail every fused output shares, in place on a chunk's rows: ``+ addend``, then
    ReLU (against a zero block: with a scalar 0 NumPy's maximum is not vectorised)."""
    if addend_rows is not None:
        o += addend_rows
    if relu:
        np.maximum(o, _zero_rows(o.shape[0], o.shape[1], o.dtype), out=o)


def batch_norm_forward_nhwc(x, weight, bias, running_mean, running_var, training: bool,
                            momentum: float, eps: float, relu: bool = False, need_x_hat: bool = True,
                            addend=None):
    """Batch norm (optionally + ``addend``, + ReLU) of a channels-last ``x (N, C, H, W)``.

    Same contract as :func:`minires.kernels.norm.batch_norm_forward_cpu` (``addend``, an
    array shaped like ``x``, is added before the ReLU: a residual block's
    ``relu(bn2(y) + shortcut)`` in one pass), plus ``need_x_hat``: when False (no backward
    will run, e.g. inference under ``no_grad``), evaluation mode skips ``x_hat`` and
    computes ``out = x * scale + shift`` in two passes.

    Returns:
        ``(out, x_hat, inv_std)``; ``out`` is channels-last; ``x_hat`` is a
        :class:`SavedInput` (pass it back to :func:`batch_norm_backward_nhwc`; its
        ``materialize()`` gives the array), or ``None`` when not needed in evaluation mode.
    """
    N, C, H, W = x.shape
    dtype = x.dtype
    count = N * H * W
    x_rows = _rows(x)
    a_rows = None
    if addend is not None:
        if not is_channels_last(addend):  # e.g. an option-A shortcut: one copy into x's layout
            addend = np.ascontiguousarray(addend.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        a_rows = _rows(addend)
    if not training and not need_x_hat:
        return _affine_eval(x, x_rows, weight, bias, running_mean, running_var, eps, relu, a_rows)
    out, out_rows = _new_like(x)
    step = _chunk(x)
    ones = np.ones(step * H * W, dtype)
    reps = H * W

    if training:
        def sums(lo, hi):
            s = np.zeros(C, dtype)
            for a in range(lo, hi, step):
                b = min(a + step, hi)
                s += ones[:(b - a) * reps] @ x_rows[a:b].reshape(-1, C)
            return s

        mean = parallel_sum(sums, N, grain=step) / dtype.type(count)
        mean_t = np.tile(mean, reps)

        def centre(lo, hi):
            s = np.zeros((2, C), dtype)                           # sum (x - mean), sum (x - mean)^2
            square = np.empty((step, reps * C), dtype)
            centred = np.empty((step, reps * C), dtype)
            for a in range(lo, hi, step):
                b = min(a + step, hi)
                xc = centred[:b - a]
                np.subtract(x_rows[a:b], mean_t, out=xc)
                sq = square[:b - a]
                np.multiply(xc, xc, out=sq)
                s[0] += ones[:(b - a) * reps] @ xc.reshape(-1, C)
                s[1] += ones[:(b - a) * reps] @ sq.reshape(-1, C)
            return s

        sums2 = parallel_sum(centre, N, grain=step)
        # the mean of the centred data is the rounding error of the first mean: correct
        # both statistics by it (float32 parity when |mean| >> std, as the reference)
        residual = sums2[0] / dtype.type(count)
        var = sums2[1] / dtype.type(count) - residual * residual
        # an infinite mean stays infinite (inf - inf made the residual NaN), as in PyTorch
        mean_stat = np.where(np.isfinite(mean), mean + residual, mean)
        update_running_stats(running_mean, running_var, mean_stat, var, count, momentum)
    else:
        mean, var = running_mean.astype(dtype, copy=False), running_var
        mean_t = np.tile(mean, reps)
        residual = None
    inv_std = 1 / np.sqrt(var.astype(dtype, copy=False) + dtype.type(eps))
    saved = SavedInput(x, mean_t, residual, inv_std)

    scale = inv_std if weight is None else weight * inv_std
    with np.errstate(invalid="ignore", over="ignore"):
        folded = mean if residual is None else mean + residual
        fold = bool(np.all(np.abs(folded) * inv_std <= _FOLD_LIMIT))
    if fold:
        # out = (x - mean') * scale + bias: three passes
        centre_t, scale_t = np.tile(folded, reps), np.tile(scale, reps)
    else:
        w_t = None if weight is None else np.tile(weight, reps)
    b_t = None if bias is None else np.tile(bias, reps)

    def normalise(lo, hi):
        buf = None if fold else np.empty((step, reps * C), dtype)
        for a in range(lo, hi, step):
            b = min(a + step, hi)
            o = out_rows[a:b]
            if fold:
                np.subtract(x_rows[a:b], centre_t, out=o)
                o *= scale_t
            else:
                xh = saved.rows(a, b, buf[:b - a])                # x_hat = (x - mean - residual) inv_std
                if w_t is not None:
                    np.multiply(xh, w_t, out=o)                   # y = weight x_hat + bias
                else:
                    o[...] = xh
            if b_t is not None:
                o += b_t
            _finish_rows(o, None if a_rows is None else a_rows[a:b], relu)

    parallel_for(normalise, N, grain=step)
    return out, saved, inv_std


def _affine_eval(x, x_rows, weight, bias, running_mean, running_var, eps: float, relu: bool, a_rows=None):
    """Evaluation-mode batch norm without ``x_hat``: ``out = x * scale + shift`` (+ ReLU)."""
    N, C, H, W = x.shape
    dtype = x.dtype
    reps = H * W
    inv_std, scale, shift = _eval_scale_shift(weight, bias, running_mean, running_var, eps, dtype)
    scale_t, shift_t = np.tile(scale, reps), np.tile(shift, reps)
    out, out_rows = _new_like(x)
    step = _chunk(x)

    def affine(lo, hi):
        for a in range(lo, hi, step):
            b = min(a + step, hi)
            o = out_rows[a:b]
            np.multiply(x_rows[a:b], scale_t, out=o)
            o += shift_t
            _finish_rows(o, None if a_rows is None else a_rows[a:b], relu)

    parallel_for(affine, N, grain=step)
    return out, None, inv_std


def _eval_scale_shift(weight, bias, running_mean, running_var, eps: float, dtype):
    """Per-channel ``scale, shift`` of evaluation-mode batch norm: ``out = x * scale + shift``."""
    inv_std = 1 / np.sqrt(running_var.astype(dtype, copy=False) + dtype.type(eps))
    scale = inv_std if weight is None else weight * inv_std
    shift = -running_mean.astype(dtype, copy=False) * scale      # weight (x - mean) inv_std + bias
    if bias is not None:
        shift = shift + bias
    return inv_std, scale, shift


_zero_blocks = threading.local()


def _zero_rows(n: int, length: int, dtype) -> np.ndarray:
    """This thread's cached ``(n, length)`` block of zeros, never written, to take
    ``np.maximum`` against (measured faster than against a scalar 0: benchmarks/RESULTS.md)."""
    key = (length, np.dtype(dtype).str)
    store = getattr(_zero_blocks, "store", None)
    if store is None:
        store = _zero_blocks.store = {}
    block = store.get(key)
    if block is None or block.shape[0] < n:
        if len(store) > 32:
            store.clear()
        block = store[key] = np.zeros((n, length), dtype)
    return block[:n]


def conv_bn_eval_nhwc(x, w, conv_bias, geometry, weight, bias, running_mean, running_var, eps: float,
                      addend=None, relu: bool = True):
    """Inference ``relu(batch_norm_eval(conv2d(x, w, conv_bias)) [+ addend])`` in one pass.

    The convolution is the channels-last one of :mod:`minires.kernels.conv_fast`; the batch
    norm (evaluation mode, running statistics: ``out = y * scale + shift``), the addition
    and the ReLU run as its epilogue on each chunk of images while the chunk's output is
    still in cache, instead of as whole-array passes afterwards. No autograd: for
    inference only. ``addend`` (any layout) is read as channels-last.

    Returns:
        ``(N, C_out, OH, OW)`` stored channels-last.
    """
    from .conv_fast import nhwc_forward  # noqa: PLC0415

    dtype = x.dtype
    _, scale, shift = _eval_scale_shift(weight, bias, running_mean, running_var, eps, dtype)
    reps = geometry.OH * geometry.OW
    scale_t, shift_t = np.tile(scale, reps), np.tile(shift, reps)
    a_rows = None
    if addend is not None:
        if not is_channels_last(addend):
            addend = np.ascontiguousarray(addend.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        a_rows = _rows(addend)

    def epilogue(rows, start, n):
        rows *= scale_t
        rows += shift_t
        _finish_rows(rows, None if a_rows is None else a_rows[start:start + n], relu)

    return nhwc_forward(x, w, conv_bias, geometry, epilogue=epilogue)


def _drop_where_not_positive(out_rows, g_rows, dst, scratch_bool, scratch_uint):
    """``dst = 0 where out <= 0 else g`` (PyTorch's ReLU backward, a select: a NaN gradient
    at a dropped position becomes 0), branch-free in four vectorised passes: the bits of
    ``g`` ANDed with ``(out <= 0) - 1`` (all ones where kept, zero where dropped)."""
    uint = scratch_uint.dtype
    np.less_equal(out_rows, out_rows.dtype.type(0), out=scratch_bool)
    np.copyto(scratch_uint, scratch_bool, casting="unsafe")
    np.subtract(scratch_uint, uint.type(1), out=scratch_uint)
    np.bitwise_and(g_rows.view(uint), scratch_uint, out=dst.view(uint))
    return dst


def batch_norm_backward_nhwc(grad, x_hat, inv_std, weight, training: bool, out=None,
                             needs_weight_grad: bool = True, needs_bias_grad: bool = True,
                             return_masked_grad: bool = False):
    """Gradients of :func:`batch_norm_forward_nhwc` (``out`` given: of the fused ReLU too).

    Same contract as :func:`minires.kernels.norm.batch_norm_backward_cpu`; ``grad`` may
    have any layout (it is made channels-last once); ``x_hat`` is the forward's
    :class:`SavedInput` or a channels-last array, ``out`` channels-last.

    With ``out``, the ReLU-masked gradient is written once, chunk by chunk during the
    reductions, and read back by the final pass (instead of masking twice); with
    ``return_masked_grad`` it is returned as well: it is the gradient of the ``addend``
    of ``relu(bn(x) + addend)``.

    With ``c = x - mean`` (or ``c = x_hat`` for an array ``x_hat``), ``x_hat = (c - r) f``
    (``r`` the forward's residual mean, ``f = inv_std``; ``r = 0, f = 1`` for an array), so
    ``sum g x_hat = f (sum g c - r sum g)`` and ``x_hat k = c (k f) - r k f``: both work from
    ``c``, one subtraction per chunk, with no cancellation.

    Returns:
        ``(grad_x, grad_weight or None, grad_bias or None)``, plus the masked gradient
        (channels-last; ``grad`` itself without ``out``) with ``return_masked_grad``;
        ``grad_x`` is channels-last.
    """
    N, C, H, W = grad.shape
    dtype = grad.dtype
    count = N * H * W
    reps = H * W
    if not is_channels_last(grad):
        grad = np.ascontiguousarray(grad.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    g_rows = _rows(grad)
    if isinstance(x_hat, SavedInput):
        saved = x_hat
        f = saved.inv_std
        r = saved.residual

        def centred(a, b, buf):
            return saved.centred_rows(a, b, buf[:b - a])
    else:
        xh_rows = _rows(x_hat)
        f, r = None, None

        def centred(a, b, buf):
            return xh_rows[a:b]
    step = _chunk(grad)
    ones = np.ones(step * reps, dtype)
    want_sum_g = training or needs_bias_grad or r is not None
    want_sum_gx = training or needs_weight_grad
    uint = _SAME_SIZE_UINT.get(dtype.itemsize)

    masked_grad, gm_rows = grad, g_rows
    if out is not None:
        o_rows = _rows(out)
        masked_grad, gm_rows = _new_like(grad)

    sum_g = sum_gc = None
    if want_sum_g or want_sum_gx or out is not None:
        def sums(lo, hi):
            s = np.zeros((2, C), dtype)
            prod = np.empty((step, reps * C), dtype) if want_sum_gx else None
            buf = np.empty((step, reps * C), dtype) if want_sum_gx else None
            if out is not None and uint is not None:
                flags = np.empty((step, reps * C), np.bool_)
                bits = np.empty((step, reps * C), uint)
            for a in range(lo, hi, step):
                b = min(a + step, hi)
                gm = gm_rows[a:b]
                if out is not None:
                    if uint is not None:
                        _drop_where_not_positive(o_rows[a:b], g_rows[a:b], gm, flags[:b - a], bits[:b - a])
                    else:
                        np.copyto(gm, keep_where_cpu(~(o_rows[a:b] <= 0), g_rows[a:b]))
                if want_sum_g:
                    s[0] += ones[:(b - a) * reps] @ gm.reshape(-1, C)
                if want_sum_gx:
                    p = prod[:b - a]
                    np.multiply(gm, centred(a, b, buf), out=p)
                    s[1] += ones[:(b - a) * reps] @ p.reshape(-1, C)
            return s

        total = parallel_sum(sums, N, grain=step)
        sum_g, sum_gc = total[0].copy(), total[1].copy()

    sum_gx = None
    if want_sum_gx:
        sum_gx = sum_gc if r is None else sum_gc - r * sum_g
        if f is not None:
            sum_gx = sum_gx * f
    scale = inv_std if weight is None else weight * inv_std
    scale_t = np.tile(scale, reps)
    if training:
        # grad_x = scale (g - sum_g / M - x_hat sum_gx / M) = g scale - c k + const
        coef = scale * sum_gx / dtype.type(count)
        k = coef if f is None else coef * f
        const = -scale * sum_g / dtype.type(count)
        if r is not None:
            const = const + k * r
        k_t, const_t = np.tile(k, reps), np.tile(const, reps)
    grad_x, gx_rows = _new_like(grad)

    def combine(lo, hi):
        tmp = np.empty((step, reps * C), dtype) if training else None
        for a in range(lo, hi, step):
            b = min(a + step, hi)
            gx = gx_rows[a:b]
            np.multiply(gm_rows[a:b], scale_t, out=gx)
            if training:
                t = np.multiply(centred(a, b, tmp), k_t, out=tmp[:b - a])  # (in place when centred into tmp)
                gx -= t
                gx += const_t

    parallel_for(combine, N, grain=step)
    if not needs_bias_grad:
        sum_g = None
    result = (grad_x, sum_gx if needs_weight_grad else None, sum_g)
    return result + (masked_grad,) if return_masked_grad else result



__all__ = ["SavedInput", "applies", "relu_forward_parallel", "relu_backward_parallel", "set_fast_paths", "fast_paths_enabled", "batch_norm_forward_nhwc", "batch_norm_backward_nhwc", "conv_bn_eval_nhwc"]


# --- ReLU split across threads ------------------------------------------------------------

#: elements per piece (a few hundred KiB) and the smallest array worth splitting
_RELU_PIECE = 1 << 16
_RELU_MIN = 1 << 20


def _flat_same_order(*arrays):
    """1-D views of arrays that share one memory order (C or channels-last), else None."""
    if all(a.flags.c_contiguous for a in arrays):
        return [a.reshape(-1) for a in arrays]
    if all(a.ndim == 4 and is_channels_last(a) for a in arrays):
        return [a.transpose(0, 2, 3, 1).reshape(-1) for a in arrays]
    return None


def relu_forward_parallel(x):
    """``max(x, 0)`` (the reference's ``np.maximum``) split across threads, keeping ``x``'s
    memory order; ``None`` when the fast path does not apply (small, odd layout, off)."""
    if (not _enabled or type(x) is not np.ndarray or x.dtype.kind != "f" or x.size < _RELU_MIN):
        return None
    out = np.empty_like(x)
    flat = _flat_same_order(x, out)
    if flat is None:
        return None
    src, dst, zero = flat[0], flat[1], x.dtype.type(0)

    def run(lo, hi):
        for a in range(lo, hi, _RELU_PIECE):
            b = min(a + _RELU_PIECE, hi)
            np.maximum(src[a:b], zero, out=dst[a:b])

    parallel_for(run, src.size, _RELU_PIECE)
    return out


def relu_backward_parallel(grad, out):
    """``keep_where_cpu(~(out <= 0), grad)`` (the reference) piece by piece across threads;
    ``None`` when the fast path does not apply."""
    if (not _enabled or type(grad) is not np.ndarray or type(out) is not np.ndarray
            or grad.shape != out.shape or grad.dtype != out.dtype or grad.dtype.kind != "f"
            or grad.size < _RELU_MIN):
        return None
    result = np.empty_like(out)
    flat = _flat_same_order(grad, out, result)
    if flat is None:
        return None
    g, o, r = flat
    zero = grad.dtype.type(0)

    def run(lo, hi):
        for a in range(lo, hi, _RELU_PIECE):
            b = min(a + _RELU_PIECE, hi)
            r[a:b] = keep_where_cpu(~(o[a:b] <= zero), g[a:b])

    parallel_for(run, g.size, _RELU_PIECE)
    return result
