"""The NCCL communicator on a GPU (world size 1 takes the same data-parallel path as many ranks).

Needs CuPy with NCCL, a GPU, mpi4py and mpiexec; run by ``benchmarks/gpu_check.sh``.
"""

import numpy as np
import pytest

from minires.io import load_state_dict

from . import mpirun
from .test_mpi import FLOAT64_SYNC, _assert_close

pytestmark = [pytest.mark.gpu, pytest.mark.mpi]


@pytest.fixture
def nccl():
    return pytest.importorskip("cupy.cuda.nccl", reason="CuPy without NCCL (pip install nvidia-nccl-cu12)")


def test_nccl_collectives_sync_bn_and_gradient_allreduce(nccl):
    rc, output, _ = mpirun.run(1, ["collectives", "cuda"], 300, script=mpirun.CHECKS)
    assert rc == 0 and "OK collectives" in output, output


def test_data_parallel_training_on_gpu_matches_cpu(nccl, tmp_path):
    env = mpirun.environment(MINIRES_TEST_MODEL="resnet8")
    for ranks, extra, out in ((0, ["--device", "cpu"], "cpu"), (1, ["--distributed", "--device", "cuda"], "gpu")):
        rc, output, _ = mpirun.run(ranks, [*FLOAT64_SYNC, *extra, "--out", str(tmp_path / out)], 600, env)
        assert rc == 0, output
    assert "1 rank (nccl)" in output and "device cuda:0" in output, output
    _assert_close(load_state_dict(tmp_path / "cpu" / "model.npz"), load_state_dict(tmp_path / "gpu" / "model.npz"),
                  rtol=1e-8)
    assert np.isfinite(load_state_dict(tmp_path / "gpu" / "model.npz")["fc.weight"]).all()
