"""Shared test setup and fixtures: GPU tests (marked ``gpu``) skip without CuPy and a GPU;
each test starts from seed 0."""

import numpy as np
import pytest

import minires as mr
from minires import nn
from minires.kernels import fused, parallel


def pytest_configure(config):
    # PyTorch is only an oracle here: on small shared machines its thread pool costs far
    # more than it saves on test-sized tensors, so run it single-threaded.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if mr.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and an NVIDIA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    mr.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def rng():
    """A fresh seeded NumPy generator for test data."""
    return np.random.default_rng(1234)


@pytest.fixture
def fusion():
    """Yields ``nn.set_fusion``; the process-wide switch is put back afterwards."""
    previous = nn.fusion_enabled()
    yield nn.set_fusion
    nn.set_fusion(previous)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Runs the test with 1 and with 2 kernel threads (the count is put back afterwards)."""
    previous = parallel.get_num_threads()
    parallel.set_num_threads(request.param)
    yield request.param
    parallel.set_num_threads(previous)


@pytest.fixture(params=["one-image-chunks", "default-chunks"])
def chunks(request, monkeypatch):
    """Runs the test with the fused kernels' default chunks and with chunks of one image."""
    if request.param == "one-image-chunks":
        monkeypatch.setattr(fused, "_CHUNK_BYTES", 1)
