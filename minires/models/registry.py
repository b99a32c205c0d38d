"""The model registry: an explicit name -> builder table, ``create`` and ``available``.

No decorators or import-time side effects register anything: :data:`MODELS` below is the
complete list, in the order the CLI prints it.
"""

from __future__ import annotations

import difflib

from minires import nn

from . import densenet, resnet

#: every model name and its builder (the builder's own name); ImageNet models first, then CIFAR ones
MODELS = {builder.__name__: builder for builder in (
    resnet.resnet18, resnet.resnet34, resnet.resnet50, resnet.resnet101, resnet.resnet152,
    resnet.wide_resnet50_2, resnet.resnext50_32x4d, resnet.se_resnet50, densenet.densenet121,
    resnet.resnet20, resnet.resnet32, resnet.resnet44, resnet.resnet56, resnet.resnet110, resnet.resnet1202,
    resnet.plain20, resnet.plain32, resnet.plain44, resnet.plain56, resnet.plain110,
    resnet.preact_resnet20, resnet.preact_resnet56, resnet.preact_resnet110, resnet.preact_resnet164,
    resnet.preact_resnet1001, resnet.se_resnet20, resnet.se_resnet56, resnet.se_resnet110,
    resnet.resnext29_8x64d, densenet.densenet_bc_100_12,
)}

#: which input each family expects (channels, height, width)
IMAGENET_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
                   "resnext50_32x4d", "se_resnet50", "densenet121")


def available(dataset: str | None = None) -> list[str]:
    """Names accepted by :func:`create`, in registry order.

    Args:
        dataset: ``'imagenet'`` or ``'cifar'`` to list one family; ``None`` lists all.
    """
    if dataset is None:
        return list(MODELS)
    if dataset not in ("imagenet", "cifar"):
        raise ValueError(f"dataset must be 'imagenet', 'cifar' or None, got {dataset!r}")
    return [n for n in MODELS if (n in IMAGENET_MODELS) == (dataset == "imagenet")]


def input_size(name: str) -> tuple[int, int, int]:
    """The ``(C, H, W)`` image size a model is designed for: ``(3, 224, 224)`` or ``(3, 32, 32)``."""
    check_name(name)
    return (3, 224, 224) if name in IMAGENET_MODELS else (3, 32, 32)


def check_name(name) -> None:
    """Raise ``ValueError`` unless ``name`` is in :func:`available`: the message suggests
    close names and lists every one."""
    if name not in MODELS:
        close = difflib.get_close_matches(str(name), MODELS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; `minires models` lists the {len(MODELS)} available: "
                         f"{', '.join(MODELS)}")


def create(name: str, **kwargs) -> nn.Module:
    """Build a model by name.

    Args:
        name: one of :func:`available`.
        **kwargs: the builder's arguments: ``num_classes`` for every model, and for CIFAR
            ResNets ``shortcut='A'|'B'|'C'``, ``shortcut_scale``, ``zero_init_residual``, ...

    Returns:
        The freshly initialised model (training mode, float32, CPU).

    Raises:
        ValueError: unknown ``name`` (the message suggests close names).
        TypeError: an argument the builder does not take.
    """
    check_name(name)
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise TypeError(f"create({name!r}, ...): {exc}") from exc
