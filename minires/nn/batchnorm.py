"""Batch normalisation layers: ``BatchNorm2d`` and ``BatchNorm1d``."""

from __future__ import annotations

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor
from . import init
from .module import Module
from .parameter import make_parameter


class _BatchNorm(Module):
    """Shared state and forward of the BatchNorm layers (``torch.nn.modules.batchnorm._BatchNorm``)."""

    _expected_ndim: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None, *,
                 bias: bool = True):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features <= 0:
            raise ValueError(f"{type(self).__name__}: num_features must be a positive int, got {num_features!r}")
        if eps <= 0:
            raise ValueError(f"{type(self).__name__}: eps must be > 0, got {eps}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1] or None, got {momentum}")
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.register_parameter("weight", make_parameter((self.num_features,), dtype, device) if affine else None)
        self.register_parameter("bias", make_parameter((self.num_features,), dtype, device)
                                if affine and bias else None)
        for name in ("running_mean", "running_var"):
            self.register_buffer(name, make_parameter((self.num_features,), dtype, device).detach()
                                 if track_running_stats else None)
        self.register_buffer("num_batches_tracked", Tensor(backend.to_device(
            np.array(0, dtype=np.int64), backend.parse_device(device))) if track_running_stats else None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0."""
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self) -> None:
        """Reset the running statistics, and weight to 1 and bias to 0 (PyTorch's defaults)."""
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input(self, x) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__}: expected a Tensor input, got {type(x).__name__}")
        if x.ndim not in self._expected_ndim:
            wanted = " or ".join(f"{d}D" for d in self._expected_ndim)
            raise ValueError(f"{type(self).__name__}: expected {wanted} input (got {x.ndim}D input "
                             f"of shape {x.shape})")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected {self.num_features} channels in axis 1, "
                             f"got input of shape {x.shape}")

    def _running_update_factor(self) -> float:
        """This batch's weight in the running statistics; counts the batch when training tracks them."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked.item())
        return factor

    def _normalize(self, x: Tensor, relu: bool = False, addend: Tensor | None = None) -> Tensor:
        factor = self._running_update_factor()
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        stats = (self.running_mean if keep_stats else None, self.running_var if keep_stats else None)
        options = dict(training=use_batch_stats, momentum=factor, eps=self.eps)
        if addend is not None:
            return F.batch_norm_add_relu(x, addend, *stats, self.weight, self.bias, **options)
        fn = F.batch_norm_relu if relu else F.batch_norm
        return fn(x, *stats, self.weight, self.bias, **options)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` per channel (axis 1); the output has ``x``'s shape."""
        self._check_input(x)
        return self._normalize(x)

    def forward_fused(self, x: Tensor, addend: Tensor | None = None) -> Tensor:
        """``relu(self(x))``, or ``relu(self(x) + addend)``, as one fused op.

        The same values, gradients and running-statistics update as the unfused
        expression (see :mod:`minires.nn.fusion`); this module's hooks are not run.
        """
        self._check_input(x)
        return self._normalize(x, relu=True, addend=addend)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over ``(N, C, H, W)`` per channel (``torch.nn.BatchNorm2d``).

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``. In training mode mean and
    (biased) var are those of the batch over N, H, W, and the running statistics move
    ``running = (1 - momentum) * running + momentum * batch`` (unbiased variance);
    ``num_batches_tracked`` counts training batches (``momentum=None`` averages them
    cumulatively). In eval mode the running statistics normalise.

    Args:
        num_features: C.
        eps: added to the variance.
        momentum: running-statistics update factor, or None for a cumulative average.
        affine: learn ``weight`` (init 1) and ``bias`` (init 0).
        track_running_stats: keep running statistics (else batch statistics always).
        device: where parameters and buffers live.
        dtype: floating dtype of parameters and running statistics (float32 if None).
        bias: with ``affine``, whether to learn the shift (keyword-only, as in PyTorch 2.13).
    """

    _expected_ndim = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` inputs per channel (``torch.nn.BatchNorm1d``).

    Same statistics and arguments as :class:`BatchNorm2d` (statistics over ``N`` and ``L``).
    """

    _expected_ndim = (2, 3)
