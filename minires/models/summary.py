"""Model statistics: parameter counts, depth, and multiply-adds measured by running the engine.

``minires models`` (the CLI) prints :func:`summary_table`; :func:`summary` gives the rows.

Multiply-adds (MACs) count one per weight use in ``Conv2d`` and ``Linear`` layers, the
convention of the ResNet papers ("3.6 GFLOPs" for ResNet-34); BN, ReLU, pooling and
additions are not counted. They are measured, not computed from a formula: forward hooks
on every ``Conv2d`` / ``Linear`` read the real output shapes of a one-image forward pass.
:func:`summary` builds each model under :func:`minires.nn.init.no_init` (all weights
zero): drawing random weights, not the forward pass, was most of the cost, and none of
the numbers depends on the weights' values.
"""

from __future__ import annotations

import minires as mr
from minires import nn

from .registry import MODELS, create, input_size

SHORTCUT_PARTS = ("downsample", "se")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (no forward pass needed).

    Args:
        model: the module.
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(int(p.data.size) for p in model.parameters() if p.requires_grad or not trainable_only)


def model_depth(model: nn.Module) -> int:
    """Weighted layers on the main path: ``Conv2d`` and ``Linear`` modules outside shortcuts and SE gates.

    This is the paper's depth: 50 for ResNet-50, 20 for ResNet-20, 121 for DenseNet-121.
    """
    return sum(1 for name, module in model.named_modules()
               if isinstance(module, (nn.Conv2d, nn.Linear)) and not set(name.split(".")) & set(SHORTCUT_PARTS))


def count_macs(model: nn.Module, image_size=None, device: str = "cpu") -> int:
    """Multiply-adds of one image's forward pass, measured with forward hooks.

    ``Conv2d``: ``C_out * OH * OW * (C_in / groups) * KH * KW``; ``Linear``: ``out * in``.
    The model runs in eval mode under ``no_grad`` and is put back in its previous mode.

    Args:
        model: the network.
        image_size: ``(C, H, W)``; defaults to ``model.default_input_size`` (set by the builders).
        device: where to run the pass.

    Returns:
        Multiply-adds per image (e.g. about 4.1e9 for ResNet-50 at 224x224).
    """
    if image_size is None:
        image_size = getattr(model, "default_input_size", None)
        if image_size is None:
            raise ValueError("count_macs: pass image_size=(C, H, W); this model has no default_input_size")
    total = [0]

    def conv_hook(module, args, output):
        kh, kw = module.weight.shape[2:]
        total[0] += int(output.data.size) * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module, args, output):
        total[0] += int(output.data.size) * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with mr.no_grad():
            model(mr.zeros(1, *image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total[0]


def summary(names=None, macs: bool = True) -> list[dict]:
    """One row per model: ``name``, ``depth``, ``params``, ``macs`` (None if not measured), ``input``.

    Args:
        names: model names (default: every name of :func:`available`).
        macs: measure multiply-adds (runs one forward pass per model, a fraction of a
            second for the ImageNet ones on CPU). ``False`` only builds the models.

    The models are built without random initialisation (:func:`minires.nn.init.no_init`):
    depth, parameter count and multiply-adds depend only on the layers' shapes.
    """
    rows = []
    for name in (list(MODELS) if names is None else list(names)):
        with nn.init.no_init():
            model = create(name)
        size = input_size(name)
        rows.append({"name": name, "depth": model_depth(model), "params": count_parameters(model),
                     "macs": count_macs(model, size) if macs else None, "input": "x".join(map(str, size))})
        del model
    return rows


def _human(n) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def summary_table(names=None, macs: bool = True) -> str:
    """:func:`summary` as an aligned text table (what ``minires models`` prints).

    Columns: model, depth, parameters (exact, with thousands separators), multiply-adds
    per image (human units), input size.
    """
    rows = summary(names, macs)
    header = ("model", "depth", "parameters", "MACs/image", "input")
    cells = [(r["name"], str(r["depth"]), f"{r['params']:,}", _human(r["macs"]), r["input"]) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    align = ("<", ">", ">", ">", "<")
    lines = ["  ".join(f"{h:{a}{w}}" for h, a, w in zip(header, align, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(f"{c:{a}{w}}" for c, a, w in zip(row, align, widths)).rstrip() for row in cells]
    return "\n".join(lines)
