"""The cost model's table, owned by the runtime: what calibration measures lands there and not in
the topology, a topology file's link costs price the model until then, and the one timed loop
every benchmark and calibration uses."""

from __future__ import annotations

import time

import numpy as np
import pytest

import hpcrt
from hpcrt import LinkCost
from hpcrt.collectives import ScanLinks, all_scan, calibrate, scan_links
from hpcrt.collectives.costmodel.allscan import auto_choice, predict_allscan
from hpcrt.costmodel.model import bottleneck_link
from hpcrt.costmodel.table import UNMEASURED_CALL_WORK, CostTable
from hpcrt.costmodel.timing import call_samples, median_call, rank_times, timed
from hpcrt.topology.table import Device, RankInfo, Topology, nominal_link_costs
from hpcrt.topology.yaml_file import load_topology_file

from conftest import SAMPLE_TOPOLOGY


UNPRICED = tuple((path, 0.0) for path in ("pipeline", "allgather", "mpi", "mpi_user"))
"""Every code path's call cost in a table without measured calls or default call work."""


def _sample_topology():
    return load_topology_file(SAMPLE_TOPOLOGY, 4, [Device("cpu")] * 4, ["host"] * 4)


def test_scan_links_take_the_measured_schedules_but_never_less_than_a_link_alone():
    topology = _sample_topology()
    intra, eth = LinkCost(1e-6, 1e-10), LinkCost(5e-6, 2e-10)
    costs = CostTable.of(topology).with_measured(links={"intra": intra, "eth": eth}, call_work={})
    assert scan_links(costs, topology, [0, 1]) == ScanLinks(intra, intra, calls=UNPRICED)  # the link alone
    costs = costs.with_measured(chain=LinkCost(3e-6, 1e-10), shift=LinkCost(9e-6, 4e-10))
    assert scan_links(costs, topology, [0, 1]) == ScanLinks(LinkCost(3e-6, 1e-10), LinkCost(9e-6, 4e-10),
                                                            calls=UNPRICED)
    # across the nodes the eth link alone is slower than the measured chain hop in β and α
    assert scan_links(costs, topology) == ScanLinks(LinkCost(5e-6, 2e-10), LinkCost(9e-6, 4e-10), calls=UNPRICED)
    costs = costs.with_measured(pipeline_block=40e-6)
    links = scan_links(costs, topology)
    assert links.block == 40e-6 and links.block_alpha == 40e-6
    costs = costs.with_measured(calls={"all_scan/mpi": LinkCost(30e-6, 0.0), "all_scan/pipeline": LinkCost(60e-6, 0.0),
                                       "all_scan/mpi_user": LinkCost(200e-6, 0.0),
                                       "allreduce/mpi": LinkCost(1.0, 0.0)})  # another family's call
    links = scan_links(costs, topology)
    assert links.calls == (("pipeline", 60e-6), ("allgather", 0.0), ("mpi", 30e-6), ("mpi_user", 200e-6))
    assert links.call("ring") == 60e-6 and links.call("allgather") == 0.0
    assert links.call("mpi", builtin_op=False) == 200e-6 and links.call("pipeline", builtin_op=False) == 60e-6


def test_unmeasured_calls_cost_the_tables_default_work_and_measured_ones_replace_it():
    topology = _sample_topology()
    table = CostTable.of(topology)
    assert dict(scan_links(table, topology).calls) == {path: UNMEASURED_CALL_WORK[f"all_scan/{path}"]
                                                       for path in ("pipeline", "allgather", "mpi", "mpi_user")}
    measured = table.with_measured(calls={"all_scan/pipeline": LinkCost(2e-6, 0.0)})
    assert dict(scan_links(measured, topology).calls)["pipeline"] == 2e-6
    assert dict(scan_links(measured, topology).calls)["mpi"] == UNMEASURED_CALL_WORK["all_scan/mpi"]


def _one_host_topology(size: int) -> Topology:
    """``size`` CPU ranks on one host at the nominal link costs, as the runtime discovers them."""
    return Topology(tuple(RankInfo(r, "host", r, Device("cpu"), host="host") for r in range(size)),
                    nominal_link_costs())


def test_all_scan_auto_picks_mpis_own_scan_for_a_few_bytes_on_two_ranks_before_calibration():
    """At 8 B on 2 ranks the messages cost alike and hpcrt's Python work per call decides: the
    default table prices it, so auto runs MPI's scan (not the pipeline) without any calibration."""
    topology = _one_host_topology(2)
    links = scan_links(CostTable.of(topology), topology)
    assert auto_choice(8, 2, links, max_blocks=1) == ("mpi", 1)
    assert auto_choice(8, 2, links, max_blocks=1, builtin_op=False)[0] == "pipeline"  # MPI calls Python back


def test_a_one_rank_scan_costs_its_call_so_auto_runs_mpis_own():
    """One rank sends nothing, yet each code path still pays its Python work: the prediction is that
    work (not zero, which made ``auto`` run the general path at ten times MPI's cost)."""
    topology = _one_host_topology(1)
    links = scan_links(CostTable.of(topology), topology)
    assert predict_allscan("pipeline", 8, 1, links) == links.call("pipeline", True) > 0
    assert auto_choice(8, 1, links, max_blocks=1) == ("mpi", 1)


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_all_scan_auto_runs_mpi_at_8_bytes_with_the_default_table(comm):
    """The runtime's table before calibration is the topology's own, and the calls of
    ``all_scan(x, "sum")`` at 8 B run (as auto_ran tallies them) what the model picks from it: mpi."""
    from hpcrt.collectives import all_scan
    from hpcrt.collectives.costmodel.memo import auto_ran
    rt = hpcrt.init({"log_files": False})
    try:
        assert rt.costs == CostTable.of(rt.topology)
        want = auto_choice(8, 2, scan_links(CostTable.of(rt.topology), rt.topology), max_blocks=1)
        x = np.full(1, comm.rank + 1.0)
        with auto_ran() as ran:
            got = [all_scan(x, "sum"), all_scan(x, "sum", validate=False)]
        assert want == ("mpi", 1) and ran == {("all_scan", "mpi"): 2}
        assert [float(g[0]) for g in got] == [comm.rank * 1.0] * 2  # rank 1 gets rank 0's 1.0; rank 0 the identity
    finally:
        hpcrt.finalize()


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
        assert {f"all_scan/{path}" for path in ("pipeline", "allgather", "mpi", "mpi_user", "mpi_round",
                                                "mpi_round_large")} \
            <= set(table.calls)
        if comm.size == 2:  # MPI's scan as the model now prices it, against a fresh timing of it
            x = np.ones(64 << 10, dtype=np.float32)
            predicted = predict_allscan("mpi", x.nbytes, 2, scan_links(table, rt.topology))
            took = median_call(lambda: all_scan(x, "sum", algorithm="mpi", validate=False), 21, comm)
            assert predicted / 3 < took < predicted * 3
        measured_classes = {"intra", "eth"} if comm.size == 4 else {"intra"}
        assert all(table.links[name] != declared[name] for name in measured_classes)
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_the_timed_loop_reports_the_slowest_rank(comm):
    """Rank 1 sleeps 20 ms a call, rank 0 not at all: ``timed`` gives rank 1's time on both ranks,
    ``rank_times`` each rank's, ``call_samples`` each call's slowest rank, and ``setup`` (a 1.5 s
    sleep, far above a 20 ms call even on a loaded host) stays out of the timing."""
    nap_s = 0.02

    def nap():
        time.sleep(nap_s if comm.rank == 1 else 0)

    fast, slow = rank_times(nap, 3, comm)
    assert fast < slow and slow >= nap_s
    assert timed(nap, 3, comm) >= nap_s
    samples = call_samples(nap, 3, comm, setup=lambda: time.sleep(1.5))
    assert len(samples) == 3 and all(nap_s <= s < 1.5 for s in samples)
    (alone,) = rank_times(nap, 2)
    assert (alone >= nap_s) == (comm.rank == 1)


def test_ran_names_calls_and_ranks_that_differ():
    from collections import Counter
    from hpcrt.collectives.costmodel.memo import tally_label
    same = Counter({("rings", "bidir_ring"): 12})
    assert tally_label([same, same]) == "bidir_ring"
    mixed = Counter({("rings", "mpi"): 8, ("rings", "bidir_ring"): 4})
    assert tally_label([mixed, mixed]) == "mpi ×8, bidir_ring ×4"
    assert tally_label([same, mixed]) == "rank 0: bidir_ring; rank 1: mpi ×8, bidir_ring ×4"
    assert tally_label([Counter(), Counter()]) is None
