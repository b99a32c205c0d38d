"""``minires.nn.functional``: the same functions as :mod:`minires.functional`.

For code written as ``import torch.nn.functional as F``: ``import minires.nn.functional as F``.
"""

from ..functional import *  # noqa: F401,F403
from ..functional import __all__  # noqa: F401
