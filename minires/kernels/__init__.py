"""Array-level kernels (no autograd): each CPU function beside its GPU twin, with a short dispatcher."""

# registers the channels-last 'nhwc' convolution, which 'auto' picks on the CPU
# (``minires.kernels.conv.set_conv_algorithm('reference')`` restores the im2col reference)
from . import conv_fast as _conv_fast  # noqa: E402,F401
# registers 'gpu_gemm' (im2col + GEMM keeping the forward's columns), which 'auto' picks on the GPU
from . import conv_gpu as _conv_gpu  # noqa: E402,F401
