"""``Module``: the base class of every layer and model, with PyTorch's semantics.

Attributes set on a module are sorted by type: a :class:`Parameter` is registered as a
parameter, a ``Module`` as a child, and a tensor given to :meth:`Module.register_buffer`
as a buffer (state that is saved but not trained, such as BatchNorm running statistics).
``state_dict()`` walks parameters, then buffers, then children, and names entries with
dotted paths (``layer1.0.bn1.running_mean``), exactly as PyTorch does, so weights move
between the two one to one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from .. import backend
from ..autograd import Tensor
from .hooks import BackwardHookGate, ModuleHooks, RemovableHandle  # noqa: F401 (importable from here)
from .parameter import Parameter, zero_grads_
from .state_dict import IncompatibleKeys, StateDictError, load_state_dict


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def _check_name(kind: str, name, module, registry: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
    if name == "":
        raise KeyError(f'{kind} name can\'t be empty string ""')
    if "." in name:
        raise KeyError(f'{kind} name can\'t contain ".", got: {name}')
    if hasattr(module, name) and name not in module.__dict__[registry]:
        raise KeyError(f"attribute '{name}' already exists")


def _parse_to_args(args, kwargs):
    """Split ``to(...)`` arguments into a device string (or None) and a dtype (or None)."""
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    for arg in args:
        if isinstance(arg, Tensor):
            device, dtype = arg.device, arg.dtype
        elif backend.names_device(arg):
            device = arg
        else:
            dtype = arg
    if device is not None:
        device = backend.parse_device(device)
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"to() expected a device ('cpu', 'cuda', 'cuda:N') or a dtype, "
                            f"got {dtype!r}") from None
        if dtype.kind != "f":
            raise TypeError(f"Module.to only accepts floating point dtypes, but got desired dtype={dtype}")
    return device, dtype


class Module(ModuleHooks):
    """Base class of layers and models (``torch.nn.Module`` semantics).

    Subclasses call ``super().__init__()`` first, assign parameters, buffers and
    submodules as attributes, and implement ``forward``. Calling the module runs the
    forward pre-hooks, ``forward``, the forward hooks, and sets up full backward hooks
    (registered with the methods of :class:`~minires.nn.hooks.ModuleHooks`).

    Example:
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = nn.Linear(4, 2)
        ...     def forward(self, x):
        ...         return self.fc(x)
        >>> [name for name, _ in Net().named_parameters()]
        ['fc.weight', 'fc.bias']
    """

    training: bool

    def __init__(self) -> None:
        # straight into __dict__: __setattr__ needs these registries to exist
        self.__dict__.update(training=True, _parameters=OrderedDict(), _buffers=OrderedDict(),
                             _non_persistent_buffers=set(), _modules=OrderedDict(),
                             _forward_pre_hooks=OrderedDict(), _forward_hooks=OrderedDict(),
                             _forward_hooks_with_kwargs=set(), _backward_hooks=OrderedDict(),
                             _backward_pre_hooks=OrderedDict())

    def forward(self, *args, **kwargs):
        """The computation; every subclass overrides it."""
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    # --- attribute registration ------------------------------------------------------
    def _require_init(self, what: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call "
                                 f"(call super().__init__() first in {type(self).__name__}.__init__)")

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            self._require_init("parameters")
            self._discard(name, keep="_parameters")
            self.register_parameter(name, value)
            return
        if params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(minires.nn.Parameter or None expected)")
            params[name] = None
            return
        if isinstance(value, Module):
            self._require_init("module")
            self._discard(name, keep="_modules")
            d["_modules"][name] = value
            return
        modules = d.get("_modules")
        if modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' "
                                "(minires.nn.Module or None expected)")
            modules[name] = None
            return
        buffers = d.get("_buffers")
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(Tensor or None expected)")
            buffers[name] = value
            return
        object.__setattr__(self, name, value)

    def _discard(self, name: str, keep: str) -> None:
        """Remove ``name`` from the other registries (its place in ``keep`` stays, as PyTorch)."""
        d = self.__dict__
        d.pop(name, None)
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry != keep:
                d[registry].pop(name, None)
        d["_non_persistent_buffers"].discard(name)

    def __getattr__(self, name: str):
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = d.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(registry, {}):
                del self.__dict__[registry][name]
                self.__dict__["_non_persistent_buffers"].discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        keys = list(super().__dir__())
        keys += list(self._parameters) + list(self._buffers) + list(self._modules)
        return sorted(set(k for k in keys if not k[0].isdigit()))

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or ``None`` as a placeholder, like ``bias=False``) under ``name``.

        Raises:
            TypeError: ``param`` is neither a ``Parameter`` nor ``None``.
            KeyError: the name is empty, dotted, or another attribute already.
        """
        self._require_init("parameters")
        _check_name("parameter", name, self, "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                            "(minires.nn.Parameter or None required)")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Add a buffer: module state that is saved and moved but not trained.

        Args:
            name: attribute name.
            tensor: a Tensor (NumPy/CuPy arrays are wrapped) or ``None``.
            persistent: whether the buffer appears in ``state_dict()``.
        """
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        _check_name("buffer", name, self, "_buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            if isinstance(tensor, np.ndarray) or backend.is_cupy_array(tensor):
                tensor = Tensor(tensor)
            else:
                raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                                "(Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        """Add a child module under ``name`` (same as ``setattr(self, name, module)``)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        _check_name("module", name, self, "_modules")
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        """The submodule at a dotted path such as ``'layer1.0.conv1'`` (``''`` is self)."""
        module = self
        if target == "":
            return module
        for item in target.split("."):
            if item not in module._modules or module._modules[item] is None:
                raise AttributeError(f"{type(module).__name__} has no submodule `{item}` (looking up {target!r})")
            module = module._modules[item]
        return module

    # --- iteration -------------------------------------------------------------------
    def _named_members(self, get_members, prefix="", recurse=True, remove_duplicate=True):
        memo = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for module_prefix, module in modules:
            for key, value in get_members(module):
                if value is None or (remove_duplicate and id(value) in memo):
                    continue
                if remove_duplicate:
                    memo.add(id(value))
                yield (module_prefix + ("." if module_prefix else "") + key), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Yield ``(dotted_name, parameter)`` pairs, each shared parameter once."""
        yield from self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Yield the parameters of this module and (``recurse``) of all its descendants."""
        return (param for _, param in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        """Yield ``(dotted_name, buffer)`` pairs (persistent or not)."""
        yield from self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        """Yield the buffers of this module and (``recurse``) of all its descendants."""
        return (buf for _, buf in self.named_buffers(recurse=recurse))

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """Yield ``(name, child)`` for the direct children, each module once."""
        memo = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in memo:
                memo.add(id(module))
                yield name, module

    def children(self) -> Iterator["Module"]:
        """Yield the direct children."""
        return (module for _, module in self.named_children())

    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, "Module"]]:
        """Yield ``(dotted_name, module)`` for self (name ``''``) and all descendants, pre-order."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub_prefix = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, sub_prefix, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        """Yield self and all descendants, pre-order."""
        return (module for _, module in self.named_modules())

    # --- state dict ------------------------------------------------------------------
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False) -> OrderedDict:
        """Map dotted names to arrays: parameters, then persistent buffers, then children.

        Args:
            destination: an ordered dict to fill (a new one by default).
            prefix: prepended to every key.
            keep_vars: give the Parameter/Tensor objects instead of their arrays.

        Returns:
            ``OrderedDict`` name -> array (NumPy or CuPy, sharing memory with the module,
            as PyTorch's state dict shares storage; copy it to keep a snapshot).
        """
        if destination is None:
            destination = OrderedDict()
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.data
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = buf if keep_vars else buf.data
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays into this module's parameters and buffers, in place.

        Values may be NumPy arrays, CuPy arrays, Tensors or Python numbers; each is
        copied into the existing array, keeping that array's device and dtype. As in
        PyTorch, a batch norm's ``num_batches_tracked`` may be missing (state dicts from
        before PyTorch 0.4.1 lack it): the current count is kept. Every other key is strict.

        Args:
            state_dict: mapping from dotted names to values.
            strict: raise when keys are missing or unexpected.

        Returns:
            ``IncompatibleKeys(missing_keys, unexpected_keys)``.

        Raises:
            StateDictError: a shape mismatch (always; the message names the key and both
                shapes), or with ``strict`` any missing or unexpected key.
            TypeError: ``state_dict`` is not a mapping or a value is not numeric.
        """
        return load_state_dict(self, state_dict, strict)

    # --- modes, devices, dtypes ------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set training mode (batch statistics in BatchNorm) on self and all descendants."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {type(mode).__name__}")
        for module in self.modules():
            module.__dict__["training"] = mode
        return self

    def eval(self) -> "Module":
        """Set evaluation mode (running statistics in BatchNorm); same as ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Set ``requires_grad`` of every parameter (freeze with ``False``)."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of all parameters (``None``, or zeros with ``set_to_none=False``)."""
        zero_grads_(self.parameters(), set_to_none)

    def apply(self, fn) -> "Module":
        """Call ``fn(module)`` on every descendant (children first) and then on self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def _apply_arrays(self, convert) -> "Module":
        """Replace the array of every parameter, gradient and buffer by ``convert(array)``.

        The Parameter and buffer objects stay the same, so optimisers keep working.
        """
        seen = set()
        for module in self.modules():
            for registry in (module._parameters, module._buffers):
                for t in registry.values():
                    if t is None or id(t) in seen:
                        continue
                    seen.add(id(t))
                    t.data = convert(t.data)
                    if t.grad is not None:
                        t.grad = convert(t.grad)
        return self

    def to(self, *args, **kwargs) -> "Module":
        """Move and/or cast parameters and buffers in place.

        ``to('cuda')``, ``to('cpu')``, ``to(np.float64)``, ``to('cuda', np.float64)``,
        ``to(device=..., dtype=...)``, or ``to(tensor)`` (its device and dtype). Casting
        touches floating-point entries only (``num_batches_tracked`` stays int64).
        """
        device, dtype = _parse_to_args(args, dict(kwargs))

        def convert(array):
            if dtype is not None and array.dtype.kind == "f" and array.dtype != dtype:
                array = array.astype(dtype)
            if device is not None and backend.array_device(array) != device:
                array = backend.to_device(array, device)
            return array

        return self._apply_arrays(convert)

    def cpu(self) -> "Module":
        """Move to the CPU."""
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> "Module":
        """Move to a GPU (``cuda:0`` by default)."""
        if device is None:
            device = "cuda:0"
        elif isinstance(device, int):
            device = f"cuda:{device}"
        return self.to(device)

    def float(self) -> "Module":
        """Cast floating parameters and buffers to float32."""
        return self.to(np.float32)

    def double(self) -> "Module":
        """Cast floating parameters and buffers to float64."""
        return self.to(np.float64)

    # --- calling and hooks -----------------------------------------------------------
    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        gate = None
        if self._backward_hooks or self._backward_pre_hooks:
            gate = BackwardHookGate(self, self._backward_hooks, self._backward_pre_hooks)
            args = gate.setup_inputs(args)
        result = self.forward(*args, **kwargs)
        for hook_id, hook in list(self._forward_hooks.items()):
            if hook_id in self._forward_hooks_with_kwargs:
                replaced = hook(self, args, kwargs, result)
            else:
                replaced = hook(self, args, result)
            if replaced is not None:
                result = replaced
        if gate is not None:
            result = gate.setup_outputs(result)
        return result

    # --- printing --------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The layer's own settings shown inside its ``repr`` (override in layers)."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + _addindent(repr(module), 2) for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        text = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                text += extra_lines[0]
            else:
                text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"
