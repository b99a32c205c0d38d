"""Modules and SGD on the GPU (CuPy) against the same on the CPU; skipped without a GPU."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
import minires.nn as nn
from minires.optim import SGD


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


def test_to_cuda_without_gpu_raises_a_clear_error():
    if mr.cuda_available():
        pytest.skip("a GPU is available")
    with pytest.raises(RuntimeError, match="CuPy"):
        nn.Linear(2, 2).to("cuda")


@pytest.mark.gpu
def test_module_to_cuda_train_steps_match_cpu():
    mr.manual_seed(0)
    cpu = _net().double()
    gpu = _net().double()
    gpu.load_state_dict(cpu.state_dict())
    params = list(gpu.parameters())
    gpu.to("cuda")
    assert all(p.device == "cuda:0" for p in gpu.parameters())
    assert all(a is b for a, b in zip(params, gpu.parameters()))
    assert gpu[1].num_batches_tracked.device == "cuda:0" and gpu[1].num_batches_tracked.dtype == np.int64
    opt_cpu = SGD(cpu.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    opt_gpu = SGD(gpu.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    rng = np.random.default_rng(0)
    hooked = []
    gpu[0].register_full_backward_hook(lambda m, gi, go: hooked.append(go[0].device))
    for _ in range(3):
        x = rng.standard_normal((4, 3, 8, 8))
        y = rng.integers(0, 5, size=4)
        for model, opt, device in ((cpu, opt_cpu, "cpu"), (gpu, opt_gpu, "cuda")):
            loss = F.cross_entropy(model(mr.tensor(x, device=device)), mr.tensor(y, device=device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert hooked == ["cuda:0"] * 3
    gpu_state = gpu.state_dict()
    for name, value in cpu.state_dict().items():
        np.testing.assert_allclose(mr.backend.as_numpy(gpu_state[name]), value, rtol=1e-9, atol=1e-11, err_msg=name)
    # loading NumPy arrays into a GPU module keeps it on the GPU; optimiser state moves back too
    gpu.load_state_dict(cpu.state_dict())
    assert gpu[0].weight.device == "cuda:0"
    opt_gpu.load_state_dict(opt_cpu.state_dict())
    assert mr.backend.array_device(opt_gpu.state[gpu[0].weight]["momentum_buffer"]) == "cuda:0"
    gpu.cpu()
    assert all(p.device == "cpu" for p in gpu.parameters())


@pytest.mark.gpu
def test_layers_created_on_cuda_and_init_there():
    conv = nn.Conv2d(3, 8, 3, device="cuda")
    assert conv.weight.device == "cuda:0"
    bound = 1 / np.sqrt(27)
    w = conv.weight.numpy()
    assert np.abs(w).max() <= bound and w.std() > 0
    bn = nn.BatchNorm2d(8, device="cuda")
    assert bn.running_var.device == "cuda:0"
    out = bn(conv(mr.randn(2, 3, 6, 6, device="cuda")))
    assert out.device == "cuda:0" and bn.num_batches_tracked.item() == 1
