"""Array-level kernels (no autograd): each CPU function beside its GPU twin, with a short dispatcher."""

# registers the channels-last 'nhwc' convolution, which 'auto' picks on the CPU
# (``minires.kernels.conv.set_conv_algorithm('reference')`` restores the im2col reference)
from . import conv_fast as _conv_fast  # noqa: E402,F401
