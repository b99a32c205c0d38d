"""Run the PyTorch oracle single-threaded: on 2 shared cores its thread pool spins and
makes small parity tests ~30x slower (8.6 s vs 0.26 s measured for one training test)."""

import pytest


@pytest.fixture(autouse=True)
def _torch_single_thread():
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
