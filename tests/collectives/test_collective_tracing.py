"""Every hpcrt collective appears in the monitor's flight recorder, in call order, completed."""

import numpy as np
import pytest

import hpcrt
from hpcrt import collectives, monitor


@pytest.mark.mpi(ranks=[2, 3], timeout=90)
def test_collectives_are_recorded(comm, mpi_tmp_path):
    hpcrt.init({"log_files": False})
    mon = monitor.start({"directory": str(mpi_tmp_path / "monitor")})
    try:
        x = np.arange(12.0) + comm.rank
        q = np.ones((3, 4)) * (comm.rank + 1)
        collectives.allreduce(x, algorithm="ring")
        collectives.allgather(x, algorithm="bidir_ring")
        collectives.reduce_scatter(x, algorithm="mpi")
        collectives.all_scan(x, "sum", algorithm="pipeline")
        handle = collectives.all_scan_start((np.full(4, 0.5), x[:4]), "affine", reverse=True)
        in_flight = [row["op"] for row in mon.recorder.records() if row["state"] == "entered"]
        handle.wait()
        collectives.ring_attention(q, q, q)
        collectives.token_ring_attention(q, q, q, causal=True)
        with pytest.raises(collectives.CollectiveMismatchError):
            collectives.allreduce(np.zeros(comm.rank + 1))
        rows = [r for r in mon.recorder.records() if r["kind"] == "collective"]
    finally:
        monitor.stop()
        hpcrt.finalize()
    assert in_flight == ["all_scan"]  # the non-blocking scan is in flight until wait()
    assert [r["op"] for r in rows] == ["allreduce", "allgather", "reduce_scatter", "all_scan", "all_scan",
                                       "ring_attention", "token_ring_attention", "allreduce"]
    assert all(r["state"] == "completed" for r in rows)
    assert [r["nbytes"] for r in rows[:4]] == [96, 96, 96, 96] and rows[4]["nbytes"] == 64
