"""Link emulation: with ``emulate: true`` a message crossing a virtual node waits its link's α-β cost;
a message inside a node does not."""

import time

import numpy as np
import pytest

import hpcrt

TOPOLOGY = """
nodes:
  - {name: a, ranks: [0, 2], nic: {class: ib}}
  - {name: b, ranks: [1, 3], nic: {class: ib}}
links:
  intra: {alpha_us: 1, bandwidth_gbytes_s: 100}
  ib: {alpha_us: 3000, bandwidth_gbytes_s: 0.1}
emulate: true
"""


@pytest.mark.mpi(ranks=[4], timeout=90)
def test_crossing_messages_take_their_link_time(comm, mpi_tmp_path, monkeypatch):
    from hpcrt.collectives.comm import transport as transport_module
    path = mpi_tmp_path / "topology.yaml"
    if comm.rank == 0:
        path.write_text(TOPOLOGY)
    comm.Barrier()
    rt = hpcrt.init({"topology_file": str(path), "log_files": False})
    held = []
    real_hold = transport_module.hold_for
    monkeypatch.setattr(transport_module, "hold_for", lambda s: (held.append(s), real_hold(s)))
    try:
        t = transport_module.Transport()
        payload = [np.arange(125_000) + 1e6 * r for r in range(comm.size)]  # 1 MB each, one per rank
        data, out = payload[rt.rank], np.empty(125_000)     # 1 MB: 3 ms + 10 ms on the ib link
        cross, same = rt.rank ^ 1, rt.rank ^ 2              # 0<->1 crosses nodes, 0<->2 stays on node a
        start = time.perf_counter()
        t.sendrecv(data, cross, out, cross)
        elapsed = time.perf_counter() - start
        assert held == [pytest.approx(3e-3 + 1e6 / 0.1e9)]
        assert elapsed >= 0.013
        np.testing.assert_array_equal(out, payload[cross])
        held.clear()
        t.sendrecv(data, same, out, same)
        assert held == []
        np.testing.assert_array_equal(out, payload[same])
    finally:
        hpcrt.finalize()
