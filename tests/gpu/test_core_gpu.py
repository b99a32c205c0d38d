"""Core autograd ops (arith, shape, reduce, indexing) on CuPy against the same graph on NumPy."""

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import backend

pytestmark = pytest.mark.gpu


def _graph(a, b, idx):
    """Touches arith, matmul broadcasting, reductions, permute/reshape, pad, cat, stack, fancy/basic indexing."""
    h = (a @ b).exp() / (1 + (a * a).sum(axis=-1, keepdims=True)).sqrt()      # (2, 3, 5)
    h = h.permute(2, 0, 1).reshape(5, 6) - h.mean()
    h = F.pad(h, (1, 2), 0.5)                                                  # (5, 9)
    h = F.cat([h, h[::2] * 2.0], axis=0)                                       # (8, 9)
    picked = h[idx]                                                            # repeated rows: scatter-add backward
    stacked = F.stack([h[0], h[1]], axis=0)                                   # (2, 9)
    return picked.max(axis=1).sum() + h[1:3, 2:5].abs().sum() + (stacked * stacked).sum() * 0.25 + (h ** 2).mean()


def test_core_graph_gpu_matches_cpu():
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((2, 3, 4)) * 0.5
    b_np = rng.standard_normal((4, 5)) * 0.5
    idx_np = np.array([0, 3, 3, 7, 0])
    results = {}
    for device in ("cpu", "cuda"):
        a = mr.Tensor(backend.to_device(a_np, device), requires_grad=True)
        b = mr.Tensor(backend.to_device(b_np, device), requires_grad=True)
        out = _graph(a, b, backend.to_device(idx_np, device))
        out.backward()
        assert out.device.startswith(device)
        results[device] = (float(out.item()), backend.as_numpy(a.grad), backend.as_numpy(b.grad))
    np.testing.assert_allclose(results["cuda"][0], results["cpu"][0], rtol=1e-12)
    np.testing.assert_allclose(results["cuda"][1], results["cpu"][1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results["cuda"][2], results["cpu"][2], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fancy_index_backward_accumulates_repeats_on_gpu(dtype):
    x = mr.Tensor(backend.to_device(np.arange(12, dtype=dtype).reshape(4, 3), "cuda"), requires_grad=True)
    idx = backend.to_device(np.array([1, 1, 3, 1]), "cuda")
    x[idx].sum().backward()
    expected = np.zeros((4, 3), dtype)
    expected[1] = 3
    expected[3] = 1
    np.testing.assert_array_equal(backend.as_numpy(x.grad), expected)


def test_module_to_cuda_and_state_dict_round_trip():
    import minires.nn as nn

    mr.manual_seed(0)
    layer = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 2))
    state = {k: backend.as_numpy(v).copy() for k, v in layer.state_dict().items()}
    layer.to("cuda")
    assert all(p.device == "cuda:0" for p in layer.parameters())
    x = mr.Tensor(backend.to_device(np.ones((2, 3, 5, 5), np.float32), "cuda"))
    layer(x).sum().backward()
    assert all(backend.is_cupy_array(p.grad) for p in layer.parameters())
    layer.load_state_dict(state)  # NumPy arrays onto a GPU module
    for k, v in layer.state_dict().items():
        assert backend.is_cupy_array(v), k
        np.testing.assert_array_equal(backend.as_numpy(v), state[k])
