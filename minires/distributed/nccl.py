"""The NCCL communicator: CuPy's NCCL bindings on GPU arrays, bootstrapped over MPI.

One GPU per rank: rank ``r`` with local rank ``l`` (its index among the ranks on its
node) uses ``cuda:l``. Rank 0 creates the NCCL unique id and broadcasts it over MPI; the
array collectives then run on the GPUs on the current CuPy stream (the ChainerMN
pure-NCCL and Horovod way), while object collectives (configurations, checkpoints) and
the abort go through MPI.

Not verified on a GPU in the session that wrote it (no GPU was available there):
``tests/distributed/test_nccl_gpu.py`` (marked ``gpu``) checks it, and
``benchmarks/gpu_check.sh`` runs it.
"""

from __future__ import annotations

import contextlib

from .communicator import Communicator, _check_root
from .mpi import MPICommunicator


def _nccl():
    try:
        import cupy  # noqa: PLC0415
        from cupy.cuda import nccl  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"the NCCL communicator needs CuPy built with NCCL ({exc}); install CuPy "
                          "(pip install 'minires[cuda12]') and NCCL (pip install nvidia-nccl-cu12), or train "
                          "on the CPU with MPI") from None
    return cupy, nccl


class NCCLCommunicator(Communicator):
    """Collectives over NCCL on CuPy arrays, one GPU per rank.

    Args:
        mpi: the :class:`~minires.distributed.mpi.MPICommunicator` of the same ranks
            (default: a new one on ``MPI.COMM_WORLD``); it carries the NCCL id, the
            object collectives and the abort.

    Attributes:
        device: ``'cuda:<local_rank>'``, made the current CuPy device.
    """

    backend = "nccl"

    def __init__(self, mpi: MPICommunicator | None = None):
        cupy, nccl = _nccl()
        self._cupy, self._nccl = cupy, nccl
        self.mpi = mpi if mpi is not None else MPICommunicator()
        self.rank, self.size = self.mpi.rank, self.mpi.size
        self.local_rank, self.local_size = self.mpi.local_rank, self.mpi.local_size
        count = cupy.cuda.runtime.getDeviceCount()
        if self.local_rank >= count:
            raise RuntimeError(f"rank {self.rank} is local rank {self.local_rank} on its node, which has only "
                               f"{count} GPU(s): start at most {count} ranks per node")
        self.device = f"cuda:{self.local_rank}"
        cupy.cuda.Device(self.local_rank).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.mpi.bcast_object(uid)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._types = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
                       "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64, "uint8": nccl.NCCL_UINT8}

    def _buffer(self, array, what: str):
        if not isinstance(array, self._cupy.ndarray):
            raise TypeError(f"NCCLCommunicator.{what}: expected a CuPy array, got {type(array).__name__}")
        if not array.flags.c_contiguous:
            raise ValueError(f"NCCLCommunicator.{what}: the array must be C-contiguous")
        kind = self._types.get(array.dtype.name)
        if kind is None:
            raise TypeError(f"NCCLCommunicator.{what}: dtype {array.dtype} is not supported by NCCL here")
        return array.data.ptr, array.size, kind

    def _stream(self) -> int:
        return self._cupy.cuda.get_current_stream().ptr

    def allreduce(self, array):
        ptr, count, kind = self._buffer(array, "allreduce")
        self.comm.allReduce(ptr, ptr, count, kind, self._nccl.NCCL_SUM, self._stream())
        return array

    def broadcast(self, array, root: int = 0):
        _check_root(root, self.size)
        ptr, count, kind = self._buffer(array, "broadcast")
        self.comm.bcast(ptr, count, kind, root, self._stream())
        return array

    def allgather(self, array):
        array = self._cupy.ascontiguousarray(array)
        out = self._cupy.empty((self.size,) + array.shape, array.dtype)
        ptr, count, kind = self._buffer(array, "allgather")
        self.comm.allGather(ptr, out.data.ptr, count, kind, self._stream())
        return out

    def bcast_object(self, obj, root: int = 0):
        return self.mpi.bcast_object(obj, root)

    def allgather_object(self, obj) -> list:
        return self.mpi.allgather_object(obj)

    def gather_object(self, obj, root: int = 0):
        return self.mpi.gather_object(obj, root)

    def barrier(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()
        self.mpi.barrier()

    def abort(self, code: int = 1) -> None:
        with contextlib.suppress(Exception):  # (aborting anyway)
            self.comm.abort()  # ncclCommAbort: kernels waiting for a dead peer return
        self.mpi.abort(code)
