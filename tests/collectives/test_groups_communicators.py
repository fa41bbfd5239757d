"""make_groups under MPI: each rank's tp, dp and pp communicators hold the planned ranks in order,
on a mixed-NIC topology whose ranks are interleaved across the nodes."""

import pytest

import hpcrt
from hpcrt.collectives import make_groups

TOPOLOGY = """
nodes:
  - {name: a, ranks: [0, 2], nic: {class: ib}}
  - {name: b, ranks: [1, 3], nic: {class: roce}}
links:
  intra: {alpha_us: 1, bandwidth_gbytes_s: 50}
  ib: {alpha_us: 2, bandwidth_gbytes_s: 25}
  roce: {alpha_us: 4, bandwidth_gbytes_s: 12.5}
  eth: {alpha_us: 30, bandwidth_gbytes_s: 1.25}
mixed: eth
"""


@pytest.mark.mpi(ranks=[4], timeout=90)
def test_communicators_match_the_plan_and_can_be_made_again(comm, mpi_tmp_path):
    path = mpi_tmp_path / "topology.yaml"
    if comm.rank == 0:
        path.write_text(TOPOLOGY)
    comm.Barrier()
    rt = hpcrt.init({"topology_file": str(path), "log_files": False})
    try:
        for strategy in ("nic_aware", "default", "nic_aware"):
            groups = make_groups(rt.topology, dp=1, pp=2, tp=2, strategy=strategy)
            for axis in ("tp", "dp", "pp"):
                members = tuple(getattr(groups, axis).allgather(rt.rank))
                assert members == groups.plan.group_of(axis, rt.rank), (strategy, axis)
            tp_nodes = {rt.topology.node_of(r) for r in groups.plan.group_of("tp", rt.rank)}
            assert len(tp_nodes) == (1 if strategy == "nic_aware" else 2)
            groups.free()
        with pytest.raises(ValueError, match="does not match the 4 ranks"):
            make_groups(dp=2, pp=2, tp=2)
    finally:
        hpcrt.finalize()
