"""Every model family on the GPU against the CPU: train-mode forward, backward, eval forward (float64).

One sweep through the registry touches every op and kernel a model uses (option-A/B
shortcuts, pre-activation, plain nets, SE gates with sigmoid and average pooling, grouped
convolutions, DenseNet concatenation, ImageNet stems with max pooling, bottlenecks), so
a GPU twin that disagrees with its CPU twin shows up here even where no kernel test covers
the combination.
"""

import numpy as np
import pytest

import minires as mr
from minires import backend, models

pytestmark = pytest.mark.gpu

CASES = [
    ("resnet20", {}, 32),
    ("resnet20", {"shortcut": "B"}, 32),
    ("preact_resnet20", {}, 32),
    ("plain20", {}, 32),
    ("se_resnet20", {}, 32),
    ("densenet_bc_100_12", {}, 32),
    ("resnext29_8x64d", {}, 16),
    ("resnet18", {}, 64),
    ("resnet50", {}, 64),
]


def _close(a, b, what, rtol=1e-8):
    scale = max(float(np.max(np.abs(b))), 1e-30)
    err = float(np.max(np.abs(a - b))) / scale
    assert err <= rtol, f"{what}: max |gpu - cpu| / max |cpu| = {err:.3g} > {rtol:g}"


def _run(model, device, x_np, cot_np):
    model.to(device)
    model.train()
    x = mr.Tensor(backend.to_device(x_np, device), requires_grad=True)
    out = model(x)
    (out * mr.Tensor(backend.to_device(cot_np, device))).sum().backward()
    grads = {n: backend.as_numpy(p.grad) for n, p in model.named_parameters()}
    state = {k: backend.as_numpy(v) for k, v in model.state_dict().items()}
    model.eval()
    with mr.no_grad():
        eval_out = backend.as_numpy(model(mr.Tensor(backend.to_device(x_np, device))).data)
    return backend.as_numpy(out.data), backend.as_numpy(x.grad), grads, state, eval_out


@pytest.mark.parametrize("name,kwargs,size", CASES, ids=[f"{n}{'-' + str(k) if k else ''}" for n, k, _ in CASES])
def test_model_gpu_matches_cpu(name, kwargs, size):
    rng = np.random.default_rng(0)
    mr.manual_seed(0)
    cpu_model = models.create(name, num_classes=10, **kwargs).to(np.float64)
    gpu_model = models.create(name, num_classes=10, **kwargs).to(np.float64)
    gpu_model.load_state_dict({k: backend.as_numpy(v) for k, v in cpu_model.state_dict().items()})
    x = rng.standard_normal((2, 3, size, size))
    cot = rng.standard_normal((2, 10))
    cpu = _run(cpu_model, "cpu", x, cot)
    gpu = _run(gpu_model, "cuda", x, cot)
    _close(gpu[0], cpu[0], "train-mode output")
    _close(gpu[1], cpu[1], "input gradient")
    for k in cpu[2]:
        _close(gpu[2][k], cpu[2][k], f"grad {k}")
    for k in cpu[3]:
        if cpu[3][k].dtype.kind == "f":
            _close(gpu[3][k], cpu[3][k], k)
        else:
            np.testing.assert_array_equal(gpu[3][k], cpu[3][k], err_msg=k)
    _close(gpu[4], cpu[4], "eval output")
