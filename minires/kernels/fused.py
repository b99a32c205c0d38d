"""Fast CPU batch norm (with the fused addend and ReLU) for channels-last arrays: ``'nhwc'``.

The reference kernels in :mod:`minires.kernels.norm` make one whole-array NumPy pass per
arithmetic step. On activations stored channels-last (as the ``'nhwc'`` convolution of
:mod:`minires.kernels.conv_fast` returns them), the ``'nhwc'`` implementation of the
batch-norm family computes the same results with the batch split across threads and each
thread's share walked in chunks of a few images that stay in the L2 cache for all of a
step's passes; per-channel sums as BLAS matrix-vector products (``ones @ X`` on the
``(pixels, C)`` view); per-channel vectors tiled to one image's length (``H*W*C``), so
every broadcast runs over long contiguous rows; and as few passes as the arithmetic
allows (the normalisation folded into ``(x - mean) * scale + bias`` where that is exact
enough, the backward computed from ``x - mean``, the ReLU mask applied once).
:func:`conv_bn_eval_nhwc` goes further for inference: batch norm, addition and ReLU run
as the epilogue of the channels-last convolution, on each chunk of its output in cache.

Semantics, arguments and results are those of the reference (PyTorch's batch norm; the
fused ReLU's gradient is 0 where ``out <= 0``, NaN passing as in PyTorch).
"""

from __future__ import annotations

import numpy as np

from .. import config
from .activation import relu_backward_cpu
from .conv_fast import nhwc_forward
from .dispatch import KernelImplementation
from .layout import as_channels_last, empty_channels_last, image_rows, is_channels_last
from .norm import BATCH_NORM, BatchNormGrads, BatchNormParams, GradsNeeded, grad_scale, update_running_stats
from .parallel import chunk_length, for_each_chunk, scratch, sum_over_chunks

#: target bytes of one chunk (a few images) so all passes over it hit the L2 cache
_CHUNK_BYTES = 1 << 20

#: the normalisation folds ``(x - mean - residual) * inv_std * weight + bias`` into
#: ``(x - mean') * scale + bias`` with ``mean' = mean + residual`` rounded once, when that
#: rounding moves no output by more than about ``_FOLD_LIMIT * 2**-24`` standard deviations
#: (``|mean'| * inv_std <= _FOLD_LIMIT``): three passes instead of five; channels whose
#: mean is far larger than their spread keep the exact two-step centring
_FOLD_LIMIT = 16.0


def set_fast_paths(enabled: bool) -> None:
    """Turn the CPU fast paths of batch norm, ReLU and pooling on (default) or off (reference kernels only).

    The same as ``minires.config.set(fast_paths=bool(enabled))``.
    """
    config.set(fast_paths=bool(enabled))


def fast_paths_enabled() -> bool:
    """Whether the CPU fast paths are on (``minires.config.get('fast_paths')``)."""
    return config.get("fast_paths")


def supports(*arrays) -> bool:
    """True when every array is a non-empty 4-D float NumPy array stored channels-last
    (NHWC memory); ``None`` entries are ignored (an empty batch takes the reference)."""
    return all(a is None or (type(a) is np.ndarray and a.dtype.kind == "f" and a.size > 0 and is_channels_last(a))
               for a in arrays)


def applies(*arrays) -> bool:
    """True when the fast path is on and :func:`supports` the arrays."""
    return fast_paths_enabled() and supports(*arrays)


def _images_per_chunk(a: np.ndarray) -> int:
    return chunk_length(a.shape[0], a[0].nbytes if a.shape[0] else 1, _CHUNK_BYTES)


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

    def centred_rows(self, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """``x - mean`` of images ``lo:hi`` as ``(hi - lo, H*W*C)`` rows, written into ``out``."""
        return np.subtract(image_rows(self.x)[lo:hi], self.mean_t, out=out)

    def rows(self, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """``x_hat`` of images ``lo:hi`` as ``(hi - lo, H*W*C)`` rows, written into ``out``."""
        if self._inv_t is None:  # only the exact normalisation and materialize() need these
            reps = self.x.shape[2] * self.x.shape[3]
            self._inv_t = np.tile(self.inv_std, reps)
            self._residual_t = None if self.residual is None else np.tile(self.residual, reps)
        self.centred_rows(lo, hi, out)
        if self._residual_t is not None:
            out -= self._residual_t
        out *= self._inv_t
        return out

    def materialize(self) -> np.ndarray:
        """The whole ``x_hat`` as a channels-last array."""
        x_hat, rows = empty_channels_last(self.x.shape, self.x.dtype)
        self.rows(0, self.x.shape[0], rows)
        return x_hat


class _GivenXHat:
    """A channels-last ``x_hat`` array behind :class:`SavedInput`'s ``centred_rows`` (its own rows)."""

    def __init__(self, x_hat):
        self.x_hat_rows = image_rows(x_hat)

    def centred_rows(self, lo: int, hi: int, out=None) -> np.ndarray:
        return self.x_hat_rows[lo:hi]


def _finish_rows(rows, shift_t, addend_rows, lo: int, hi: int, relu: bool) -> None:
    """The tail every output chunk shares, in place: ``+ shift``, ``+ addend[lo:hi]``, then ReLU
    (against a cached block of zeros: with a scalar 0 NumPy's maximum is not vectorised)."""
    if shift_t is not None:
        rows += shift_t
    if addend_rows is not None:
        rows += addend_rows[lo:hi]
    if relu:
        np.maximum(rows, scratch("zeros", rows.shape, rows.dtype, zero=True), out=rows)


# --- forward -----------------------------------------------------------------------------------

def batch_norm_forward_nhwc(x, params: BatchNormParams, addend=None, need_x_hat: bool = True):
    """Batch norm (optionally + ``addend``, + ReLU) of a channels-last ``x (N, C, H, W)``.

    Same contract as :func:`minires.kernels.norm.batch_norm_forward_cpu` (``addend``, any
    layout, is added before the ReLU: a residual block's ``relu(bn2(y) + shortcut)`` in one
    pass), plus ``need_x_hat``: when False (no backward will run, e.g. inference under
    ``no_grad``), evaluation mode skips ``x_hat`` and computes ``out = x * scale + shift``
    in two passes.

    Returns:
        ``(out, x_hat, inv_std)``; ``out`` is channels-last; ``x_hat`` is a
        :class:`SavedInput` (pass it back to :func:`batch_norm_backward_nhwc`; its
        ``materialize()`` gives the array), or ``None`` when not needed in evaluation mode.
    """
    addend_rows = None if addend is None else image_rows(as_channels_last(addend))
    if not params.training and not need_x_hat:
        return _affine_eval(x, params, addend_rows)
    dtype = x.dtype
    N, C, H, W = x.shape
    step = _images_per_chunk(x)
    if params.training:
        mean, residual, var = _batch_statistics(x, step)
        # an infinite mean stays infinite (inf - inf made the residual NaN), as in PyTorch
        batch_mean = np.where(np.isfinite(mean), mean + residual, mean)
        update_running_stats(params.running_mean, params.running_var, batch_mean, var, N * H * W, params.momentum)
    else:
        mean, var, residual = params.running_mean.astype(dtype, copy=False), params.running_var, None
    inv_std = 1 / np.sqrt(var.astype(dtype, copy=False) + dtype.type(params.eps))
    saved = SavedInput(x, np.tile(mean, H * W), residual, inv_std)
    return _normalise(saved, mean, params, addend_rows, step), saved, inv_std


def _batch_statistics(x, step: int):
    """``(mean, residual, var)`` per channel: the mean, the mean of ``x - mean`` (its rounding
    error, which corrects both statistics: float32 parity when ``|mean| >> std``) and the
    biased variance."""
    N, C, H, W = x.shape
    dtype, reps = x.dtype, H * W
    x_rows = image_rows(x)
    ones = np.ones(step * reps, dtype)
    count = dtype.type(N * reps)

    def add_sums(lo, hi, acc):
        acc += ones[:(hi - lo) * reps] @ x_rows[lo:hi].reshape(-1, C)

    mean = sum_over_chunks(add_sums, N, step, C, dtype) / count
    mean_t = np.tile(mean, reps)

    def add_centred_sums(lo, hi, acc):                  # sum (x - mean), sum (x - mean)^2
        centred = np.subtract(x_rows[lo:hi], mean_t)
        square = np.multiply(centred, centred)
        acc[0] += ones[:(hi - lo) * reps] @ centred.reshape(-1, C)
        acc[1] += ones[:(hi - lo) * reps] @ square.reshape(-1, C)

    sums = sum_over_chunks(add_centred_sums, N, step, (2, C), dtype)
    residual = sums[0] / count
    return mean, residual, sums[1] / count - residual * residual


def _normalise(saved: SavedInput, mean, params: BatchNormParams, addend_rows, step: int):
    """``out = [relu](weight x_hat + bias [+ addend])``, folded or exact (see ``_FOLD_LIMIT``)."""
    x, residual, inv_std = saved.x, saved.residual, saved.inv_std
    reps = x.shape[2] * x.shape[3]
    x_rows = image_rows(x)
    out, out_rows = empty_channels_last(x.shape, x.dtype)
    bias_t = None if params.bias is None else np.tile(params.bias, reps)
    with np.errstate(invalid="ignore", over="ignore"):
        folded_mean = mean if residual is None else mean + residual
        fold = bool(np.all(np.abs(folded_mean) * inv_std <= _FOLD_LIMIT))
    if fold:                                             # out = (x - mean') * scale + bias: three passes
        centre_t, scale_t = np.tile(folded_mean, reps), np.tile(grad_scale(inv_std, params.weight), reps)
    else:
        weight_t = None if params.weight is None else np.tile(params.weight, reps)

    def normalise_chunk(lo, hi):
        rows = out_rows[lo:hi]
        if fold:
            np.subtract(x_rows[lo:hi], centre_t, out=rows)
            rows *= scale_t
        else:
            x_hat = saved.rows(lo, hi, np.empty(rows.shape, rows.dtype))   # (x - mean - residual) inv_std
            if weight_t is not None:
                np.multiply(x_hat, weight_t, out=rows)
            else:
                rows[...] = x_hat
        _finish_rows(rows, bias_t, addend_rows, lo, hi, params.relu)

    for_each_chunk(normalise_chunk, x.shape[0], step)
    return out


def _eval_scale_shift(params: BatchNormParams, dtype):
    """Per-channel ``(inv_std, scale, shift)`` of evaluation-mode batch norm: ``out = x * scale + shift``."""
    inv_std = 1 / np.sqrt(params.running_var.astype(dtype, copy=False) + dtype.type(params.eps))
    scale = grad_scale(inv_std, params.weight)
    shift = -params.running_mean.astype(dtype, copy=False) * scale      # weight (x - mean) inv_std + bias
    if params.bias is not None:
        shift = shift + params.bias
    return inv_std, scale, shift


def _affine_eval(x, params: BatchNormParams, addend_rows):
    """Evaluation-mode batch norm without ``x_hat``: ``out = x * scale + shift`` (+ addend, ReLU)."""
    reps = x.shape[2] * x.shape[3]
    inv_std, scale, shift = _eval_scale_shift(params, x.dtype)
    scale_t, shift_t = np.tile(scale, reps), np.tile(shift, reps)
    x_rows = image_rows(x)
    out, out_rows = empty_channels_last(x.shape, x.dtype)

    def affine_chunk(lo, hi):
        rows = out_rows[lo:hi]
        np.multiply(x_rows[lo:hi], scale_t, out=rows)
        _finish_rows(rows, shift_t, addend_rows, lo, hi, params.relu)

    for_each_chunk(affine_chunk, x.shape[0], _images_per_chunk(x))
    return out, None, inv_std


def conv_bn_eval_nhwc(x, w, conv_bias, geometry, params: BatchNormParams, addend=None):
    """Inference ``[relu](batch_norm_eval(conv2d(x, w, conv_bias)) [+ addend])`` in one pass.

    The convolution is the channels-last one of :mod:`minires.kernels.conv_fast`; the batch
    norm (evaluation mode, running statistics of ``params``: ``out = y * scale + shift``),
    the addition and the ReLU (``params.relu``) run as its epilogue on each chunk of images
    while the chunk's output is still in cache, instead of as whole-array passes afterwards.
    No autograd: for inference only. ``addend`` (any layout) is read as channels-last.

    Returns:
        ``(N, C_out, OH, OW)`` stored channels-last.
    """
    _, scale, shift = _eval_scale_shift(params, x.dtype)
    reps = geometry.OH * geometry.OW
    scale_t, shift_t = np.tile(scale, reps), np.tile(shift, reps)
    addend_rows = None if addend is None else image_rows(as_channels_last(addend))

    def epilogue(rows, start, n):
        rows *= scale_t
        _finish_rows(rows, shift_t, addend_rows, start, start + n, params.relu)

    return nhwc_forward(x, w, conv_bias, geometry, epilogue=epilogue)


# --- backward ----------------------------------------------------------------------------------

def batch_norm_backward_nhwc(grad, saved, params: BatchNormParams, needs: GradsNeeded = GradsNeeded()):
    """Gradients of :func:`batch_norm_forward_nhwc` (of the fused ReLU too with ``params.relu``).

    Same contract as :func:`minires.kernels.norm.batch_norm_backward_cpu`; ``grad`` may have
    any layout (it is made channels-last once); the ``x_hat`` of ``saved = (out, x_hat,
    inv_std)`` is the forward's :class:`SavedInput` or a channels-last array, ``out``
    channels-last. With the ReLU, the masked gradient is written once, chunk by chunk during
    the reductions, and read back by the final pass; it is the gradient of the addend.

    With ``c = x - mean`` (or ``c = x_hat`` for an array ``x_hat``), ``x_hat = (c - r) f``
    (``r`` the forward's residual mean, ``f = inv_std``; ``r = 0, f = 1`` for an array), so
    ``sum g x_hat = f (sum g c - r sum g)`` and ``x_hat k = c (k f) - r k f``: both work from
    ``c``, one subtraction per chunk, with no cancellation.

    Returns:
        :class:`~minires.kernels.norm.BatchNormGrads`; ``x`` and ``addend`` channels-last.
    """
    out, x_hat, inv_std = saved[:3]
    grad = as_channels_last(grad)
    if isinstance(x_hat, SavedInput):
        centred, c_scale, residual = x_hat, x_hat.inv_std, x_hat.residual
    else:
        centred, c_scale, residual = _GivenXHat(x_hat), None, None
    count = grad.dtype.type(grad.size // grad.shape[1])
    masked_grad, sum_g, sum_gc = _masked_grad_and_sums(
        grad, out if params.relu else None, centred, want_sum_g=params.training or needs.bias or residual is not None,
        want_sum_gc=params.training or needs.weight)
    sum_gx = None
    if sum_gc is not None:
        sum_gx = sum_gc if residual is None else sum_gc - residual * sum_g
        if c_scale is not None:
            sum_gx = sum_gx * c_scale
    scale = grad_scale(inv_std, params.weight)
    k = const = grad_x = None
    if needs.x and params.training:
        # grad_x = scale (g - sum_g / M - x_hat sum_gx / M) = g scale - c k + const
        coef = scale * sum_gx / count
        k = coef if c_scale is None else coef * c_scale
        const = -scale * sum_g / count
        if residual is not None:
            const = const + k * residual
    if needs.x:
        grad_x = _combine(masked_grad, centred, scale, k, const)
    return BatchNormGrads(grad_x, sum_gx if needs.weight else None, sum_g if needs.bias else None,
                          masked_grad if needs.addend else None)


def _masked_grad_and_sums(grad, out, centred, want_sum_g: bool, want_sum_gc: bool):
    """One pass: the ReLU-masked gradient (``grad`` itself without ``out``), ``sum g`` and
    ``sum g c`` per channel (``None`` where not wanted)."""
    N, C, H, W = grad.shape
    reps, dtype = H * W, grad.dtype
    g_rows = image_rows(grad)
    masked_grad, gm_rows = (grad, g_rows) if out is None else empty_channels_last(grad.shape, dtype)
    if not (want_sum_g or want_sum_gc or out is not None):
        return masked_grad, None, None
    out_rows = None if out is None else image_rows(out)
    step = _images_per_chunk(grad)
    ones = np.ones(step * reps, dtype)

    def add_chunk(lo, hi, acc):
        gm = gm_rows[lo:hi]
        if out_rows is not None:
            relu_backward_cpu(g_rows[lo:hi], out_rows[lo:hi], into=gm)
        if want_sum_g:
            acc[0] += ones[:(hi - lo) * reps] @ gm.reshape(-1, C)
        if want_sum_gc:
            product = np.multiply(gm, centred.centred_rows(lo, hi, np.empty(gm.shape, dtype)))
            acc[1] += ones[:(hi - lo) * reps] @ product.reshape(-1, C)

    sums = sum_over_chunks(add_chunk, N, step, (2, C), dtype)
    return masked_grad, sums[0].copy(), (sums[1].copy() if want_sum_gc else None)


def _combine(masked_grad, centred, scale, k, const):
    """``grad_x = g scale`` (evaluation) or ``g scale - c k + const`` (training), chunk by chunk."""
    reps = masked_grad.shape[2] * masked_grad.shape[3]
    gm_rows = image_rows(masked_grad)
    grad_x, gx_rows = empty_channels_last(masked_grad.shape, masked_grad.dtype)
    scale_t = np.tile(scale, reps)
    k_t, const_t = (None, None) if k is None else (np.tile(k, reps), np.tile(const, reps))

    def combine_chunk(lo, hi):
        rows = gx_rows[lo:hi]
        np.multiply(gm_rows[lo:hi], scale_t, out=rows)
        if k_t is not None:
            tmp = np.empty(rows.shape, rows.dtype)
            rows -= np.multiply(centred.centred_rows(lo, hi, tmp), k_t, out=tmp)   # (in place when centred into tmp)
            rows += const_t

    for_each_chunk(combine_chunk, masked_grad.shape[0], _images_per_chunk(masked_grad))
    return grad_x


BATCH_NORM.register(KernelImplementation("nhwc", batch_norm_forward_nhwc, batch_norm_backward_nhwc, supports))

__all__ = ["SavedInput", "supports", "applies", "set_fast_paths", "fast_paths_enabled", "batch_norm_forward_nhwc",
           "batch_norm_backward_nhwc", "conv_bn_eval_nhwc", "is_channels_last"]
