"""Array-level kernels (no autograd): each CPU function beside its GPU twin, with a short dispatcher.

Op families with several implementations (convolution, batch norm with its fused ReLU and
addend, ReLU, pooling) choose among them through :mod:`minires.kernels.dispatch`. Importing
this package registers the fast paths that live in their own modules.
"""

# registers the channels-last 'nhwc' convolution, which 'auto' picks on the CPU
# (``minires.kernels.conv.set_conv_algorithm('reference')`` restores the im2col reference)
from . import conv_fast as _conv_fast  # noqa: E402,F401
# registers 'gpu_gemm' (im2col + GEMM keeping the forward's columns), which 'auto' picks on the GPU
from . import conv_gpu as _conv_gpu  # noqa: E402,F401
# registers the channels-last batch norm 'nhwc' (with its fused addend and ReLU), which 'auto' picks on the CPU
from . import fused as _fused  # noqa: E402,F401
