"""Real CuPy buffers on a CUDA device: device choice, staged and CUDA-aware transfers, a
checkpoint of device state. Skipped cleanly where CuPy or a GPU is missing (CI has none; the
fake GPU covers the same paths there). The collectives, attention and LSE-merge tests also run
on CuPy arrays wherever a GPU is visible (tests/array_backends.py)."""

import numpy as np
import pytest

from hpcrt.topology.discovery import gpu_count

cupy = pytest.importorskip("cupy")
pytestmark = pytest.mark.skipif(gpu_count() == 0, reason="no CUDA device visible to CuPy")


def mpi_is_cuda_aware() -> bool:
    from mpi4py import MPI  # noqa: F401  (loads the MPI library the probe reads)
    from hpcrt.backends.cuda_aware import probe_cuda_support
    return bool(probe_cuda_support()[0])


@pytest.mark.mpi(ranks=[1, 2], timeout=120)
@pytest.mark.parametrize("cuda_aware", ["yes", "no"])
def test_cupy_ring_exchange(comm, cuda_aware):
    import hpcrt
    from hpcrt.collectives.comm.transport import Transport
    if cuda_aware == "yes" and not mpi_is_cuda_aware():
        pytest.skip("this MPI library is not CUDA-aware: device pointers cannot go to it directly")
    rt = hpcrt.init({"cuda_aware": cuda_aware, "log_files": False})
    try:
        assert rt.device.kind == "gpu" and rt.xp is cupy
        assert rt.device.index == rt.local_rank % gpu_count()
        right, left = (rt.rank + 1) % rt.size, (rt.rank - 1) % rt.size
        for n in (0, 1, 1 << 20):
            send = cupy.asarray(np.random.default_rng(rt.rank).standard_normal(n))
            recv = cupy.zeros(n)
            Transport().sendrecv(send, right, recv, left)
            np.testing.assert_array_equal(cupy.asnumpy(recv), np.random.default_rng(left).standard_normal(n))
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[1, 2], timeout=120)
def test_checkpoint_of_device_state(comm, mpi_tmp_path):
    """Device arrays are snapshotted through pinned staging: mutating them after wait_snapshot()
    leaves the checkpoint alone, and a fresh checkpointer reads back the values saved."""
    import hpcrt
    from hpcrt.checkpoint import Checkpointer, Shard
    rt = hpcrt.init({"log_files": False})
    rows = 1 << 16
    full = np.random.default_rng(5).standard_normal((rows * rt.size, 4)).astype(np.float32)
    mine = full[rt.rank * rows:(rt.rank + 1) * rows]
    state = {"w": Shard(cupy.asarray(mine), full.shape, (rt.rank * rows, 0)),
             "bias": cupy.arange(10, dtype=cupy.float64) + rt.rank}
    try:
        with Checkpointer(mpi_tmp_path / "ckpt", comm=rt.comm, local_dir=mpi_tmp_path / "local") as ck:
            ck.save(1, state)
            ck.wait_snapshot()
            state["w"].array[...] = 0
            state["bias"] += 100
            ck.wait()
        with Checkpointer(mpi_tmp_path / "ckpt", comm=rt.comm, local_dir=mpi_tmp_path / "local") as fresh:
            step, got = fresh.restore()
    finally:
        hpcrt.finalize()
    assert step == 1 and set(fresh.restored_from.values()) == {"local"}
    assert got["w"].offset == (rt.rank * rows, 0) and np.array_equal(got["w"].array, mine)
    assert np.array_equal(got["bias"], np.arange(10.0) + rt.rank)
