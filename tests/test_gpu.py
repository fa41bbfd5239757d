"""Real CuPy buffers on a CUDA device: device choice, staged and CUDA-aware transfers.
Skipped cleanly where CuPy or a GPU is missing (CI has none; the fake GPU covers the paths there)."""

import numpy as np
import pytest

from hpcrt._src.discovery import gpu_count

cupy = pytest.importorskip("cupy")
pytestmark = pytest.mark.skipif(gpu_count() == 0, reason="no CUDA device visible to CuPy")


@pytest.mark.mpi(ranks=[1, 2], timeout=120)
@pytest.mark.parametrize("cuda_aware", ["yes", "no"])
def test_cupy_ring_exchange(comm, cuda_aware):
    import hpcrt
    from hpcrt.collectives._src.transport import Transport
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
