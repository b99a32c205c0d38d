"""Synchronised batch normalisation: statistics over the global batch of all ranks.

In training mode :class:`SyncBatchNorm` normalises with the mean and variance of the
union of every rank's part of the batch, as one process would on the whole batch:

- forward: each rank reduces its part to ``(count, mean, centred sum of squares)`` per
  channel (the numerically safe form of the sum and the sum of squares), the ranks
  exchange these ``2C + 1`` numbers (one allgather) and all combine them in rank order
  into the global ``mean`` and biased ``var`` (Chan et al.'s parallel variance), then
  ``x_hat = (x - mean) / sqrt(var + eps)``, ``y = weight x_hat + bias``, and the running
  statistics move with the global batch statistics (the unbiased variance uses the
  global count ``M``);
- backward: the two per-channel sums the batch-norm gradient needs, ``sum g`` and
  ``sum g x_hat``, are summed over all ranks (one allreduce of ``2C`` numbers), and
  ``grad_x = weight inv_std (g - sum g / M - x_hat sum g x_hat / M)``; ``grad_weight`` and
  ``grad_bias`` stay this rank's part (the gradient allreduce sums them over the ranks).

``g`` must be the gradient of the *global* loss: the trainer scales each rank's mean loss
by its share of the batch (see :mod:`minires.distributed.data_parallel`).

Evaluation mode uses the running statistics and never communicates. Kernels, autograd
and models know nothing of this: :func:`convert_sync_batchnorm` swaps the layers of a
built model. Being a subclass, the layer is called module by module inside residual
blocks (no fused BN + ReLU, see :mod:`minires.nn.fusion`); values are the same.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..autograd.function import sum_tangents
from ..backend import get_array_module
from ..kernels.norm import channel_axes, channel_shape, grad_scale
from ..nn.batchnorm import _BatchNorm


def _local_moments(x, axes, xp):
    """``(count, mean, centred sum of squares)`` per channel of this rank's part, in float64."""
    channels = x.shape[1]
    count = x.size // channels
    if count == 0:
        zeros = xp.zeros(channels, np.float64)
        return 0, zeros, zeros, None
    centre = x.mean(axis=axes, dtype=np.float64).astype(x.dtype)
    shape = channel_shape(x.shape)
    centred = x - centre.reshape(shape)
    sum1 = centred.sum(axis=axes, dtype=np.float64)
    sum2 = xp.square(centred).sum(axis=axes, dtype=np.float64)
    mean = centre.astype(np.float64) + sum1 / count
    return count, mean, sum2 - sum1 * sum1 / count, (centred, centre)


def combine_moments(stats):
    """Global ``(count, mean, biased var)`` from per-rank rows ``[count, mean (C), centred SS (C)]``.

    ``mean = sum_r n_r mean_r / M``, ``var = (sum_r SS_r + sum_r n_r (mean_r - mean)^2) / M``,
    summed in rank order (the same on every rank).
    """
    channels = (stats.shape[1] - 1) // 2
    counts = stats[:, :1]
    total = float(counts.sum())
    means, sums_sq = stats[:, 1:channels + 1], stats[:, channels + 1:]
    mean = (counts * means).sum(axis=0) / total
    var = (sums_sq.sum(axis=0) + (counts * (means - mean) ** 2).sum(axis=0)) / total
    return total, mean, var


def _global_moments(x, comm):
    """``(count M, mean, biased var, centred)`` over every rank's ``x`` (one allgather); see :func:`_local_moments`."""
    xp = get_array_module(x)
    count, mean_r, sum_sq_r, centred = _local_moments(x, channel_axes(x.ndim), xp)
    total, mean, var = combine_moments(comm.allgather(xp.concatenate([xp.full(1, float(count)), mean_r, sum_sq_r])))
    if total <= 1:
        raise ValueError(f"SyncBatchNorm: expected more than 1 value per channel over all ranks when training, "
                         f"got {int(total)} (input of shape {x.shape} on this rank)")
    return total, mean, var, centred


def _inv_std(var, eps: float, dtype):
    xp = get_array_module(var)
    return (1.0 / xp.sqrt(var.astype(dtype) + dtype.type(eps))).astype(dtype)


class SyncBatchNormFunction(Function):
    def forward(self, x, weight, bias, *, comm, running_mean, running_var, momentum, eps):
        xp = get_array_module(x)
        shape = channel_shape(x.shape)
        total, mean, var, centred = _global_moments(x, comm)
        if running_mean is not None:
            running_mean[...] = momentum * mean.astype(running_mean.dtype) + (1 - momentum) * running_mean
        if running_var is not None:
            unbiased = var * (total / (total - 1))
            running_var[...] = momentum * unbiased.astype(running_var.dtype) + (1 - momentum) * running_var
        inv_std = _inv_std(var, eps, x.dtype)
        if centred is None:
            x_hat = xp.empty_like(x)
        else:
            x_hat, centre = centred  # x - centre, shifted on to x - mean in place
            x_hat -= (mean - centre.astype(np.float64)).astype(x.dtype).reshape(shape)
            x_hat *= inv_std.reshape(shape)
        out = x_hat * weight.reshape(shape) if weight is not None else x_hat.copy()
        if bias is not None:
            out += bias.reshape(shape)
        self.comm, self.total, self.x_hat, self.inv_std, self.weight = comm, total, x_hat, inv_std, weight
        return out

    def backward(self, grad):
        # d/d bias = sum g and d/d weight = sum g x_hat over this rank (the gradient allreduce adds the
        # ranks); d/dx = weight inv_std (g - G / M - x_hat GX / M) with G, GX those sums over all ranks
        xp = get_array_module(grad)
        needs = self.needs_input_grad
        axes = channel_axes(grad.ndim)
        shape = channel_shape(grad.shape)
        x_hat = self.x_hat
        sum_g = grad.sum(axis=axes, dtype=np.float64)
        sum_gx = (grad * x_hat).sum(axis=axes, dtype=np.float64)
        grad_x = None
        if needs[0]:
            sums = self.comm.allreduce(xp.concatenate([sum_g, sum_gx]))
            channels = grad.shape[1]
            mean_g = (sums[:channels] / self.total).astype(grad.dtype).reshape(shape)
            mean_gx = (sums[channels:] / self.total).astype(grad.dtype).reshape(shape)
            scale = grad_scale(self.inv_std, self.weight)
            grad_x = x_hat * -mean_gx
            grad_x += grad
            grad_x -= mean_g
            grad_x *= scale.reshape(shape)
        grad_weight = sum_gx.astype(grad.dtype) if needs[1] else None
        grad_bias = sum_g.astype(grad.dtype) if needs[2] else None
        return grad_x, grad_weight, grad_bias

    def jvp(self, tangents, inputs, output, *, comm, running_mean, running_var, momentum, eps):
        # d(w x_hat + b) = w d x_hat + x_hat dw + db; the global statistics move with every rank's x:
        # d x_hat = inv_std (dx - G(dx) - x_hat G(x_hat dx)), G the mean over all ranks (one allreduce)
        (tx, tw, tb), (x, w, _) = tangents, inputs
        xp = get_array_module(x)
        axes, shape = channel_axes(x.ndim), channel_shape(x.shape)
        total, mean, var, _ = _global_moments(x, comm)
        inv_std = _inv_std(var, eps, x.dtype).reshape(shape)
        x_hat = (x - mean.astype(x.dtype).reshape(shape)) * inv_std
        d_hat = None
        if tx is not None:
            sums = comm.allreduce(xp.concatenate([tx.sum(axis=axes, dtype=np.float64),
                                                  (x_hat * tx).sum(axis=axes, dtype=np.float64)]))
            channels = x.shape[1]
            mean_t = (sums[:channels] / total).astype(x.dtype).reshape(shape)
            mean_xt = (sums[channels:] / total).astype(x.dtype).reshape(shape)
            d_hat = inv_std * (tx - mean_t - x_hat * mean_xt)
            if w is not None:
                d_hat = w.reshape(shape) * d_hat
        return sum_tangents(output.shape, d_hat, None if tw is None else tw.reshape(shape) * x_hat,
                            None if tb is None else tb.reshape(shape))


def sync_batch_norm(x: Tensor, running_mean, running_var, weight: Tensor | None, bias: Tensor | None,
                    momentum: float, eps: float, comm) -> Tensor:
    """Training-mode batch norm of ``x`` with the statistics of every rank's batch (see the module docstring).

    Args:
        x: this rank's part of the batch, ``(N_r, C, *spatial)``.
        running_mean: ``(C,)`` array updated in place, or ``None``.
        running_var: ``(C,)`` array updated in place, or ``None``.
        weight: ``(C,)`` scale or ``None``.
        bias: ``(C,)`` shift or ``None``.
        momentum: weight of the batch statistics in the running update.
        eps: added to the variance.
        comm: the :class:`~minires.distributed.communicator.Communicator` of the ranks.

    Returns:
        ``weight (x - mean) / sqrt(var + eps) + bias`` with the global mean and biased variance.
    """
    if x.dtype.kind != "f":
        raise TypeError(f"sync_batch_norm: expected a floating-point input, got dtype {x.dtype}")
    return SyncBatchNormFunction.apply(x, weight, bias, comm=comm, running_mean=running_mean,
                                       running_var=running_var, momentum=float(momentum), eps=float(eps))


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics cover every rank's part of the batch (``torch.nn.SyncBatchNorm``).

    Same arguments, parameters, buffers and state-dict keys as ``BatchNorm2d``; accepts
    ``(N, C)`` and ``(N, C, *spatial)`` inputs. In evaluation mode it is plain batch norm
    with the running statistics.

    Args:
        comm: the communicator of the ranks (default: the process's, see
            :func:`minires.distributed.get_communicator`, read at each call).
    """

    _expected_ndim = (2, 3, 4, 5)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True, comm=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.comm = comm

    def forward(self, x: Tensor) -> Tensor:
        """``(N_r, C, *spatial) -> (N_r, C, *spatial)``."""
        self._check_input(x)
        if not self.training:
            return self._normalize(x)
        momentum = self._running_update_factor()
        from . import get_communicator  # noqa: PLC0415

        comm = self.comm if self.comm is not None else get_communicator()
        stats = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        return sync_batch_norm(x, *(None if s is None else s.data for s in stats), self.weight, self.bias,
                               momentum, self.eps, comm)


def convert_sync_batchnorm(module, comm=None):
    """Replace every batch-norm layer of ``module`` by a :class:`SyncBatchNorm` sharing its tensors.

    The new layers hold the very same parameter and buffer objects (an optimizer built
    before keeps working, state-dict keys are unchanged) and the train/eval mode.

    Args:
        module: a model (or a single batch-norm layer).
        comm: the communicator the layers synchronise over (default: the process's at call time).

    Returns:
        ``module`` with its layers replaced, or the new layer when ``module`` itself is one.
    """
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats, bias=module.bias is not None or not module.affine, comm=comm)
        for name in ("weight", "bias"):
            setattr(sync, name, getattr(module, name))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            sync._buffers[name] = module._buffers[name]
        sync.train(module.training)
        return sync
    for name, child in list(module.named_children()):
        if child is not None:
            replaced = convert_sync_batchnorm(child, comm)
            if replaced is not child:
                setattr(module, name, replaced)
    return module
