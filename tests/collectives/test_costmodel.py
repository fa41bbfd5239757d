"""The cost model's table, owned by the runtime: what calibration measures lands there and not in
the topology, a topology file's link costs price the model until then, and the one timed loop
every benchmark and calibration uses."""

from __future__ import annotations

import time

import pytest

import hpcrt
from hpcrt import LinkCost
from hpcrt.collectives import ScanLinks, calibrate, scan_links
from hpcrt.costmodel.model import bottleneck_link
from hpcrt.costmodel.table import CostTable
from hpcrt.costmodel.timing import call_samples, rank_times, timed
from hpcrt.topology.table import Device
from hpcrt.topology.yaml_file import load_topology_file

from conftest import SAMPLE_TOPOLOGY


def _sample_topology():
    return load_topology_file(SAMPLE_TOPOLOGY, 4, [Device("cpu")] * 4, ["host"] * 4)


def test_scan_links_take_the_measured_schedules_but_never_less_than_a_link_alone():
    topology = _sample_topology()
    intra, eth = LinkCost(1e-6, 1e-10), LinkCost(5e-6, 2e-10)
    costs = CostTable.of(topology).with_measured(links={"intra": intra, "eth": eth})
    assert scan_links(costs, topology, [0, 1]) == ScanLinks(intra, intra)  # nothing measured: the link alone
    costs = costs.with_measured(chain=LinkCost(3e-6, 1e-10), shift=LinkCost(9e-6, 4e-10))
    assert scan_links(costs, topology, [0, 1]) == ScanLinks(LinkCost(3e-6, 1e-10), LinkCost(9e-6, 4e-10))
    # across the nodes the eth link alone is slower than the measured chain hop in β and α
    assert scan_links(costs, topology) == ScanLinks(LinkCost(5e-6, 2e-10), LinkCost(9e-6, 4e-10))
    costs = costs.with_measured(pipeline_block=40e-6)
    links = scan_links(costs, topology)
    assert links.block == 40e-6 and links.block_alpha == 40e-6 and links.calls == ()
    costs = costs.with_measured(calls={"all_scan/mpi": LinkCost(30e-6, 0.0), "all_scan/pipeline": LinkCost(60e-6, 0.0),
                                       "all_scan/mpi_user": LinkCost(200e-6, 0.0),
                                       "allreduce/mpi": LinkCost(1.0, 0.0)})  # another family's call
    links = scan_links(costs, topology)
    assert links.calls == (("pipeline", 60e-6), ("mpi", 30e-6), ("mpi_user", 200e-6))
    assert links.call("ring") == 60e-6 and links.call("allgather") == 0.0
    assert links.call("mpi", builtin_op=False) == 200e-6 and links.call("pipeline", builtin_op=False) == 60e-6


def test_a_table_never_changes_the_topology_it_prices():
    """Measured link classes price the model through a copy; the topology keeps its file's costs."""
    topology = _sample_topology()
    declared = dict(topology.link_costs)
    slow_eth = LinkCost(50e-6, 2e-9)
    costs = CostTable.of(topology).with_measured(links={"eth": slow_eth})
    assert costs.links["intra"] == declared["intra"]  # merged, not replaced
    assert bottleneck_link(costs, topology) == LinkCost(max(50e-6, declared["intra"].alpha), 2e-9)
    assert costs.on(topology).link_cost(1, 3) == slow_eth
    assert topology.link_costs == declared and topology.link_cost(1, 3) == declared["eth"]
    assert CostTable.of(topology).on(topology) is topology  # nothing to change: the topology itself
    assert {"eth", "intra"} <= set(costs.entries()) and "pipeline_block" not in costs.entries()


@pytest.mark.mpi(ranks=[2, 4], timeout=120)
def test_calibrate_installs_one_table_and_leaves_the_topology_file_alone(comm):
    """calibrate() replaces the runtime's table with a measured one, the same on every rank; the
    topology keeps its file's link costs, which priced the model before (nominal, unmeasured)."""
    rt = hpcrt.init({"topology_file": str(SAMPLE_TOPOLOGY) if comm.size == 4 else None, "log_files": False})
    try:
        declared = dict(rt.topology.link_costs)
        before = rt.costs
        assert before.links == declared and before.chain is None and not before.steps
        table = calibrate()
        assert rt.costs is table is not before and rt.topology.link_costs == declared
        assert comm.allgather(table) == [table] * comm.size
        assert table.chain and table.shift and set(table.steps) == {"ring", "bidir_ring"}
        assert table.pipeline_block > 0 and "allreduce/mpi" in table.calls
        assert {f"all_scan/{path}" for path in ("pipeline", "allgather", "mpi", "mpi_user")} <= set(table.calls)
        measured_classes = {"intra", "eth"} if comm.size == 4 else {"intra"}
        assert all(table.links[name] != declared[name] for name in measured_classes)
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_the_timed_loop_reports_the_slowest_rank(comm):
    """Rank 1 sleeps 20 ms a call, rank 0 not at all: ``timed`` gives rank 1's time on both ranks,
    ``rank_times`` each rank's, ``call_samples`` each call's slowest rank, and ``setup`` (a 0.5 s
    sleep) stays out of the timing."""
    nap_s = 0.02

    def nap():
        time.sleep(nap_s if comm.rank == 1 else 0)

    fast, slow = rank_times(nap, 3, comm)
    assert fast < slow and slow >= nap_s
    assert timed(nap, 3, comm) >= nap_s
    samples = call_samples(nap, 3, comm, setup=lambda: time.sleep(0.5))
    assert len(samples) == 3 and all(nap_s <= s < 0.5 for s in samples)
    (alone,) = rank_times(nap, 2)
    assert (alone >= nap_s) == (comm.rank == 1)
