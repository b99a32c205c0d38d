"""``RemovableHandle``: what registering a hook returns, on a tensor or a module."""

from __future__ import annotations

import itertools
import weakref
from collections import OrderedDict

_hook_ids = itertools.count()


class RemovableHandle:
    """Returned by ``register_*_hook``; ``remove()`` unregisters the hook.

    Also a context manager: the hook is removed when the ``with`` block ends.
    """

    def __init__(self, hooks_dict: OrderedDict):
        self.id = next(_hook_ids)
        self._hooks_ref = weakref.ref(hooks_dict)

    def remove(self) -> None:
        """Unregister the hook (a no-op if it was removed already)."""
        hooks = self._hooks_ref()
        if hooks is not None:
            hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False
