"""benchmarks/gradnorm.py's PyTorch mirror equals minires' models (the like-for-like comparison)."""

import importlib.util
import os

import numpy as np
import pytest

import minires as mr
from minires import analysis
from minires.analysis.inputs import load_batch
from minires.models import create

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _benchmark():
    spec = importlib.util.spec_from_file_location("gradnorm_bench", os.path.join(ROOT, "benchmarks", "gradnorm.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, shortcut, scale", [
    ("plain20", "A", 1.0), ("resnet20", "A", 1.0), ("resnet20", "B", 1.0), ("resnet20", "A", 0.9),
    ("preact_resnet20", "A", 1.0), ("preact_resnet20", "B", 1.0),
])
def test_mirror_gives_the_same_outputs_and_ratio(name, shortcut, scale):
    bench = _benchmark()
    x, y = load_batch("gaussian", 4, seed=0)
    mr.manual_seed(0)
    model = create(name, shortcut=shortcut, shortcut_scale=scale).double().train()
    x = x.astype(np.float64)
    mine = analysis.conv_gradient_ratio(model, mr.tensor(x), mr.tensor(y))
    theirs, _ = bench.torch_log10_ratio(model, name, shortcut, scale, x, y, mine["first"], mine["last"])
    assert theirs == pytest.approx(mine["log10_ratio"], abs=1e-9)
    net = bench.torch_mirror(name, shortcut, scale)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}, strict=True)
    net.double().eval()
    model.eval()
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(mr.tensor(x)).numpy(), ref, rtol=1e-10, atol=1e-12)
