"""Shared test setup: GPU tests skip without CuPy and a GPU; each test starts from seed 0."""

import numpy as np
import pytest

import minires as mr


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
        if "gpu" in item.keywords:
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
