import numpy as np
import pytest

import minires as mr
from minires import backend


def test_parse_device_normalises():
    assert backend.parse_device("cpu") == "cpu"
    assert backend.parse_device("CUDA") == "cuda:0"
    assert backend.parse_device("cuda:3") == "cuda:3"


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cuda:", ""])
def test_parse_device_rejects_unknown(bad):
    with pytest.raises(ValueError, match="unknown device"):
        backend.parse_device(bad)


def test_default_device_from_environment(monkeypatch):
    monkeypatch.delenv("MINIRES_DEVICE", raising=False)
    assert backend.default_device() == "cpu"
    monkeypatch.setenv("MINIRES_DEVICE", "cpu")
    assert mr.tensor([1.0]).device == "cpu"
    monkeypatch.setenv("MINIRES_DEVICE", "bogus")
    with pytest.raises(ValueError, match="MINIRES_DEVICE"):
        backend.default_device()


def test_get_array_module_is_numpy_for_host_arrays():
    assert backend.get_array_module(np.zeros(2), 3.0) is np


@pytest.mark.skipif(mr.cuda_available(), reason="checks the error raised without a GPU")
def test_cuda_without_gpu_raises_one_clear_error():
    with pytest.raises(RuntimeError, match="pip install"):
        mr.tensor([1.0], device="cuda")
    with pytest.raises(RuntimeError, match="CuPy"):
        mr.tensor([1.0]).to("cuda")


def test_manual_seed_makes_randn_repeatable():
    mr.manual_seed(7)
    a = mr.randn(3, 4).numpy()
    mr.manual_seed(7)
    b = mr.randn(3, 4).numpy()
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError):
        mr.manual_seed("7")


def test_rng_state_round_trip():
    state = backend.get_rng_state()
    a = mr.rand(5).numpy()
    backend.set_rng_state(state)
    np.testing.assert_array_equal(a, mr.rand(5).numpy())


@pytest.mark.gpu
def test_cuda_round_trip_and_mixed_device_error():
    x = mr.tensor([1.0, 2.0], device="cuda", requires_grad=True)
    assert x.device == "cuda:0"
    y = (x * 3).to("cpu")
    y.sum().backward()
    assert x.grad.__class__.__module__.startswith("cupy")
    np.testing.assert_array_equal(backend.as_numpy(x.grad), [3.0, 3.0])
    with pytest.raises(ValueError, match="cpu"):
        _ = x + mr.tensor([1.0, 2.0])
