"""SGD on CuPy parameters (the fused multi-tensor kernel) against SGD on NumPy, bit for bit."""

import numpy as np
import pytest

import minires as mr
from minires import backend, optim

pytestmark = pytest.mark.gpu


def _params(device, dtype, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    shapes = [(16, 3, 3, 3), (16,), (16,), (10, 64), (10,), (5000,)]
    return [mr.Tensor(backend.to_device(rng.standard_normal(s).astype(dtype), device), requires_grad=True)
            for s in shapes]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov,dampening", [(False, 0.0), (True, 0.0), (False, 0.5)])
def test_sgd_groups_gpu_equal_cpu(dtype, nesterov, dampening):
    results = {}
    for device in ("cpu", "cuda"):
        ps = _params(device, dtype)
        groups = [{"params": ps[:1] + ps[3:4], "weight_decay": 5e-4},
                  {"params": ps[1:3] + ps[4:], "weight_decay": 0.0, "lr": 0.05}]
        opt = optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=nesterov, dampening=dampening)
        rng = np.random.default_rng(1)
        for step in range(4):
            for i, p in enumerate(ps):
                # parameter 2 has no gradient in step 1: it must be skipped, then start its buffer late
                p.grad = None if (i == 2 and step == 1) else backend.to_device(
                    rng.standard_normal(p.shape).astype(dtype), device)
            opt.step()
        results[device] = ([backend.as_numpy(p.data) for p in ps],
                           [backend.as_numpy(opt.state[p]["momentum_buffer"]) for p in ps])
    for a, b in zip(results["cuda"][0], results["cpu"][0]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(results["cuda"][1], results["cpu"][1]):
        np.testing.assert_array_equal(a, b)


def test_sgd_gpu_state_dict_round_trip():
    ps = _params("cuda", np.float32)
    opt = optim.SGD(ps, lr=0.1, momentum=0.9)
    for p in ps:
        p.grad = backend.to_device(np.ones(p.shape, np.float32), "cuda")
    opt.step()
    state = opt.state_dict()
    ps2 = _params("cuda", np.float32)
    opt2 = optim.SGD(ps2, lr=0.1, momentum=0.9)
    opt2.load_state_dict(state)
    for p, p2 in zip(ps, ps2):
        b2 = opt2.state[p2]["momentum_buffer"]
        assert backend.is_cupy_array(b2)
        np.testing.assert_array_equal(backend.as_numpy(b2), backend.as_numpy(opt.state[p]["momentum_buffer"]))


def test_sgd_step_is_one_launch_per_group(monkeypatch):
    from minires.kernels import optim as kopt

    calls = []
    original = kopt.sgd_multi_tensor_gpu
    monkeypatch.setattr(kopt, "sgd_multi_tensor_gpu", lambda *a, **k: calls.append(len(a[0])) or original(*a, **k))
    ps = _params("cuda", np.float32)
    opt = optim.SGD([{"params": ps[:3]}, {"params": ps[3:], "weight_decay": 1e-4}], lr=0.1, momentum=0.9)
    for p in ps:
        p.grad = backend.to_device(np.ones(p.shape, np.float32), "cuda")
    opt.step()
    assert calls == [3, 3]
