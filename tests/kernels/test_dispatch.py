"""The one dispatch mechanism of the kernel families (minires/kernels/dispatch.py), and the
import structure of minires/kernels (no cycles, module-level or inside functions)."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

from minires import config
from minires.kernels import activation, conv, norm, pooling
from minires.kernels.dispatch import KernelFamily, KernelImplementation, twin

KERNELS = pathlib.Path(__file__).resolve().parents[2] / "minires" / "kernels"


def _family(choice="auto"):
    reference = KernelImplementation("reference", lambda x: "reference", None)
    family = KernelFamily("test_family", reference, choice=lambda: choice)
    family.register(KernelImplementation("positive", lambda x: "positive", None, lambda x: x > 0))
    family.register(KernelImplementation("even", lambda x: "even", None, lambda x: x % 2 == 0))
    return family


def test_auto_takes_the_latest_registered_that_supports_the_problem():
    family = _family()
    assert family.names() == ["auto", "reference", "positive", "even"]
    assert family.select(4).name == "even"          # registered last: tried first
    assert family.select(3).name == "positive"
    assert family.select(-3).name == "reference"    # nothing applies: the reference


def test_a_named_choice_falls_back_to_the_reference_where_it_does_not_apply():
    family = _family("positive")
    assert family.select(4).name == "positive"
    assert family.select(-4).name == "reference"
    assert family.select(4, algorithm="reference").name == "reference"
    assert family.select(4, algorithm="auto").name == "even"


def test_unknown_and_reserved_names_are_refused():
    family = _family()
    with pytest.raises(ValueError, match=r"test_family: unknown algorithm 'fast'; expected one of \['auto', "):
        family.select(1, algorithm="fast")
    with pytest.raises(ValueError, match="test_family: unknown algorithm 'nope'"):
        _family("nope").select(1)
    with pytest.raises(ValueError, match="reserved"):
        family.register(KernelImplementation("auto", None, None))


def test_twin_runs_the_cpu_function_on_numpy():
    run = twin(lambda a, k: ("cpu", k), lambda a, k: ("gpu", k))
    assert run(np.zeros(2), k=3) == ("cpu", 3)


def test_every_family_can_be_forced_to_its_reference():
    x = np.ascontiguousarray(np.ones((2, 3, 4, 5), np.float32).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    big = np.ones(1 << 21, np.float32)
    geometry = conv.conv_geometry((2, 3, 4, 5), (4, 3, 3, 3), 1, 1)
    assert norm.BATCH_NORM.select(x).name == "nhwc" and activation.RELU.select(big).name == "threads"
    assert conv.CONV2D.select(geometry, "cpu").name == "nhwc"
    for family, problem in ((norm.BATCH_NORM, (x,)), (activation.RELU, (big,)), (pooling.MAX_POOL2D, (x,)),
                            (pooling.AVG_POOL2D, (x,)), (conv.CONV2D, (geometry, "cpu"))):
        assert family.select(*problem, algorithm="reference").name == "reference", family.name
    with config.using(fast_paths=False, conv_algorithm="reference"):
        for family, problem in ((norm.BATCH_NORM, (x,)), (activation.RELU, (big,)), (conv.CONV2D, (geometry, "cpu"))):
            assert family.select(*problem).name == "reference", family.name


def test_batch_norm_backward_runs_the_implementation_its_forward_chose(rng):
    x = rng.standard_normal((2, 5, 4, 3)).transpose(0, 3, 1, 2)   # (N, C, H, W) stored channels-last
    params = norm.BatchNormParams(training=True)
    saved = norm.batch_norm_forward(x, params)
    assert saved.algorithm == "nhwc"
    with config.using(fast_paths=False):                   # switched off in between: the saved recipe still
        grads = norm.batch_norm_backward(np.ones_like(x), saved, params)   # goes back to its own backward
    reference = norm.batch_norm_forward(x, params, algorithm="reference")
    assert reference.algorithm == "reference"
    expected = norm.batch_norm_backward(np.ones_like(x), reference, params)
    np.testing.assert_allclose(grads.x, expected.x, rtol=1e-12, atol=1e-12)


def _kernel_imports():
    """``{module: {imported kernel module: inside a function?}}`` for minires/kernels."""
    modules = {p.stem for p in KERNELS.glob("*.py") if p.stem != "__init__"}
    edges = {}
    for name in modules:
        tree = ast.parse((KERNELS / f"{name}.py").read_text())
        edges[name] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minires.kernels"):
                targets = [node.module.split(".")[-1]] + [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target in modules:
                    edges[name][target] = edges[name].get(target, False) or node.col_offset > 0
    return edges


def test_no_import_cycles_inside_kernels():
    edges = _kernel_imports()
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in edges[module]:
            assert state.get(target) != "open", f"import cycle: {' -> '.join(path + [target])}"
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    hidden = [(a, b) for a, targets in edges.items() for b, inside in targets.items() if inside]
    assert hidden == [], f"kernel modules importing each other inside functions: {hidden}"
