"""The runtime under a real mpiexec at 1-4 ranks: private communicator, local rank, the gathered
topology, the agreed run directory, and GPU-path transfers with the fake GPU backend."""

import os
import socket

import numpy as np
import pytest
from mpi4py import MPI

import hpcrt
from hpcrt.backends.arrays import fake_stream_syncs

from conftest import SAMPLE_TOPOLOGY


def all_equal(comm, value) -> bool:
    """True on every rank when every rank holds the same value."""
    values = comm.allgather(value)
    return all(v == values[0] for v in values)


@pytest.mark.mpi(ranks=[1, 2, 3, 4], timeout=60)
def test_init_is_idempotent_and_private(comm, mpi_tmp_path, monkeypatch):
    monkeypatch.delenv("HPCRT_LOG_FILES", raising=False)  # the suite turns rank log files off
    rt = hpcrt.init({"run_dir": str(mpi_tmp_path / "run"), "log_files": True})
    try:
        assert hpcrt.init() is rt and hpcrt.get_runtime() is rt
        assert MPI.Comm.Compare(rt.comm, MPI.COMM_WORLD) == MPI.CONGRUENT  # a clone, not COMM_WORLD itself
        assert (rt.rank, rt.size) == (comm.rank, comm.size)
        shared = comm.Split_type(MPI.COMM_TYPE_SHARED)
        assert rt.local_rank == shared.rank == int(os.environ["MPI_LOCALRANKID"])
        shared.Free()
        assert rt.node == socket.gethostname() and rt.device.kind == "cpu" and rt.xp is np
        # every rank holds the same, complete table
        assert all_equal(comm, rt.topology.ranks) and rt.topology.size == comm.size
        assert [r.rank for r in rt.topology.ranks] == list(range(comm.size))
        assert rt.topology.ranks[comm.rank].local_rank == rt.local_rank
        # one run directory, agreed; one log file per rank inside it
        assert all_equal(comm, str(rt.run_dir)) and rt.run_dir == (mpi_tmp_path / "run").resolve()
        hpcrt.get_runtime().comm.Barrier()
        logs = sorted(p.name for p in (rt.run_dir / "logs").iterdir())
        assert logs == [f"rank-{r:05d}.log" for r in range(comm.size)]
    finally:
        hpcrt.finalize()
    assert not hpcrt.is_initialized()
    assert hpcrt.init({"log_files": False}) is not rt
    hpcrt.finalize()


@pytest.mark.mpi(ranks=[4], timeout=60)
def test_topology_file_makes_two_virtual_nodes(comm):
    rt = hpcrt.init({"topology_file": str(SAMPLE_TOPOLOGY), "log_files": False})
    try:
        assert rt.topology.nodes == ["node-ib", "node-roce"]
        assert rt.node == ("node-ib" if comm.rank < 2 else "node-roce")
        assert rt.local_rank == comm.rank % 2
        assert rt.topology.ranks[comm.rank].nic_class == ("ib" if comm.rank < 2 else "roce")
        assert rt.topology.link_class(0, 3) == "eth"
        assert all_equal(comm, rt.topology)
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[1, 2, 3, 4], timeout=60)
@pytest.mark.parametrize("cuda_aware", ["yes", "no"])
def test_fake_gpu_ring_exchange_matches_numpy(comm, cuda_aware):
    """A ring shift of fake-GPU buffers, direct (CUDA-aware path) or staged, equals the numpy answer."""
    from hpcrt.collectives.comm.transport import Transport
    rt = hpcrt.init({"cuda_aware": cuda_aware, "log_files": False})
    try:
        transport = Transport()
        right, left = (rt.rank + 1) % rt.size, (rt.rank - 1) % rt.size
        for dtype in (np.float32, np.float64, np.int64):
            for n in (0, 1, 1000, 1 << 16):
                mine = np.random.default_rng(rt.rank).standard_normal(n).astype(dtype)
                expected = np.random.default_rng(left).standard_normal(n).astype(dtype)
                send, recv = hpcrt.to_fake_gpu(mine), hpcrt.to_fake_gpu(np.zeros(n, dtype))
                syncs = fake_stream_syncs()
                transport.sendrecv(send, right, recv, left)
                assert isinstance(recv, hpcrt.FakeGpuArray)
                np.testing.assert_array_equal(recv.get(), expected)
                assert fake_stream_syncs() - syncs == (2 if cuda_aware == "yes" else 0)
        if cuda_aware == "no" and rt.size > 1:
            assert rt.staging.pool.reuses > 0  # the pinned pool is reused, not reallocated per call
    finally:
        hpcrt.finalize()
