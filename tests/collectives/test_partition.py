"""Hierarchical partitioning under MPI: every operation against a numpy reference over many
(numel, p, topology, levels, weights) cases; inter-node bytes per step equal their formulas; link
emulation charges hpZ less time than flat; bad input fails on every rank."""

import numpy as np
import pytest

import hpcrt
from hpcrt.collectives import (CollectiveMismatchError, HierarchicalPartition, count_link_bytes, inter_node_bytes,
                               predict_step, run_partition_benchmark, step_link_bytes)
from hpcrt.collectives.partition.bench import zero_step

LINKS = """
links:
  intra: {alpha_us: 1, bandwidth_gbytes_s: 100}
  ib: {alpha_us: 2, bandwidth_gbytes_s: 10}
"""


def topology_text(nodes, emulate=False, links=LINKS):
    """YAML for virtual nodes given as (ranks, groups or None)."""
    lines = ["nodes:"]
    for i, (ranks, groups) in enumerate(nodes):
        extra = f", groups: {groups}" if groups else ""
        lines.append(f"  - {{name: n{i}, ranks: {ranks}, nic: {{class: ib}}{extra}}}")
    return "\n".join(lines) + links + f"emulate: {str(emulate).lower()}\n"


def topologies(p):
    """Named topologies for p ranks: node-consecutive, interleaved, and 3-level ones with groups."""
    cases = {"one_node": [(list(range(p)), [[r] for r in range(p)])],
             "node_per_rank": [([r], [[r]]) for r in range(p)]}
    if p == 2:
        cases["pair"] = [([0, 1], [[0, 1]])]
    if p == 4:
        cases["2x2"] = [([0, 1], None), ([2, 3], None)]
        cases["2x2_interleaved"] = [([0, 2], None), ([1, 3], None)]
        cases["2_nodes_x_pair"] = [([0, 1], [[0, 1]]), ([2, 3], [[2, 3]])]
        cases["1_node_x_2_pairs"] = [([0, 1, 2, 3], [[0, 1], [2, 3]])]
        cases["interleaved_pairs"] = [([0, 2], [[0, 2]]), ([1, 3], [[1, 3]])]
    return cases


def init_with(comm, tmp_path, name, text):
    path = tmp_path / f"{name}.yaml"
    if comm.rank == 0:
        path.write_text(text)
    comm.Barrier()
    return hpcrt.init({"topology_file": str(path), "log_files": False})


def weight_cases(p):
    return [None, [r + 1 for r in range(p)], [1e-3] + [1.0] * (p - 1)]


def check_partition(part, rank, p, numel, backend):
    """Every operation of ``part`` against numpy; integer-valued floats make sums exact."""
    grads = [((np.arange(numel) * (r + 3)) % 11).astype(np.float64) for r in range(p)]
    params = (np.arange(numel) % 13).astype(np.float64)
    total = np.sum(grads, axis=0)
    shard = part.reduce_scatter_grads(backend(grads[rank]))
    np.testing.assert_array_equal(np.asarray(_host(shard)), total[part.primary])
    primary = backend(params[part.primary])
    np.testing.assert_array_equal(_host(part.allgather_params(primary)), params)
    if part.secondary is not None:
        secondary = part.refresh_secondary(primary)
        np.testing.assert_array_equal(_host(secondary), params[part.secondary])
        np.testing.assert_array_equal(_host(part.allgather_secondary(secondary)), params)
    out, in_place = backend(np.zeros(numel)), backend(grads[rank])
    assert part.allgather_params(primary, out=out) is out
    np.testing.assert_array_equal(_host(out), params)
    np.testing.assert_array_equal(_host(part.reduce_scatter_grads(in_place, inplace=True)), total[part.primary])
    return part.primary.stop - part.primary.start


def _host(x):
    return x.get() if hasattr(x, "get") else x


@pytest.mark.mpi(ranks=[1, 2, 3, 4], timeout=150)
def test_matches_numpy_over_topologies_levels_sizes_and_weights(comm, mpi_tmp_path):
    p = comm.size
    for name, nodes in topologies(p).items():
        rt = init_with(comm, mpi_tmp_path, name, topology_text(nodes))
        try:
            schemes = ["flat", "hpz"] + (["3level"] if rt.topology.groups else [])
            for levels in schemes:
                for numel in sorted({0, 1, max(p - 1, 0), p, 7, 101}):
                    for weights in weight_cases(p):
                        with HierarchicalPartition(numel, levels=levels, weights=weights, dtype="float64") as part:
                            size = check_partition(part, rt.rank, p, numel, np.array)
                        assert sum(comm.allgather(size)) == numel, (name, levels, numel, weights)
            with HierarchicalPartition(50, levels=schemes[-1], dtype="float64") as part:
                check_partition(part, rt.rank, p, 50, hpcrt.to_fake_gpu)
        finally:
            hpcrt.finalize()


@pytest.mark.mpi(ranks=[4], timeout=120)
def test_partitions_are_reusable_side_by_side_and_after_free(comm, mpi_tmp_path):
    rt = init_with(comm, mpi_tmp_path, "t", topology_text(topologies(4)["2_nodes_x_pair"]))
    try:
        for _ in range(3):
            a = HierarchicalPartition(10, levels="hpz", dtype="float64")
            b = HierarchicalPartition(3, levels="3level", weights=[4, 1, 1, 1], dtype="float64")
            check_partition(b, rt.rank, 4, 3, np.array)
            check_partition(a, rt.rank, 4, 10, np.array)
            a.free()
            b.free()
        with pytest.raises(RuntimeError, match="freed"):
            a.reduce_scatter_grads(np.zeros(10))
        weighted = HierarchicalPartition(1000, levels="flat", weights=[1, 2, 3, 4], dtype="float64")
        assert weighted.primary.stop - weighted.primary.start == 100 * (rt.rank + 1)
        weighted.free()
        half = rt.comm.Split(rt.rank % 2, rt.rank)          # world ranks {0, 2} and {1, 3}: one per node
        with HierarchicalPartition(9, levels="hpz", comm=half, dtype="float64") as part:
            assert part.plan.members == ((0, 2) if rt.rank % 2 == 0 else (1, 3))
            with count_link_bytes() as window:
                check_partition(part, half.rank, 2, 9, np.array)
            assert {dst for _, dst in window.sent} == {part.plan.members[1 - half.rank]}
        half.Free()
    finally:
        hpcrt.finalize()


def step_bytes(comm, part, numel):
    """Bytes per (src, dst) of one ZeRO step, merged from every rank's records."""
    grad, primary = np.ones(numel), np.ones(part.primary.stop - part.primary.start)
    with count_link_bytes() as window:
        zero_step(part, grad, primary)
    merged = {}
    for sent in comm.allgather(window.sent):
        merged.update(sent)
    return merged


@pytest.mark.mpi(ranks=[4], timeout=120)
def test_inter_node_bytes_per_step_equal_the_formulas(comm, mpi_tmp_path):
    n, b, p, g, nodes = 1200, 8, 4, 2, 2
    crossings = {"2x2": 2, "2x2_interleaved": 4, "2_nodes_x_pair": 2}
    for name in ("2x2", "2x2_interleaved", "2_nodes_x_pair"):
        rt = init_with(comm, mpi_tmp_path, name, topology_text(topologies(4)[name]))
        try:
            schemes = ["flat", "hpz"] + (["3level"] if rt.topology.groups else [])
            for levels in schemes:
                with HierarchicalPartition(n, levels=levels, dtype="float64") as part:
                    recorded = step_bytes(comm, part, n)
                    assert recorded == step_link_bytes(part.plan, b)
                inter = inter_node_bytes(recorded, rt.topology)
                if levels == "flat":  # one ring: each rank sends 3 (p - 1) shards of n/p to one neighbour
                    assert sorted(recorded.values()) == [3 * (p - 1) * n * b // p] * p, (name, recorded)
                    assert sorted(src for src, _ in recorded) == sorted(dst for _, dst in recorded) == list(range(p))
                    assert inter == 3 * crossings[name] * (p - 1) * n * b // p, name
                    if name == "2x2":
                        assert inter == 3 * (p - 1) * n * b // g
                else:
                    assert inter == 2 * (nodes - 1) * n * b, (name, levels)
            for levels, weights, numel in (("hpz", [1, 5, 2, 3], 1001), ("flat", None, 3), ("hpz", None, 2)):
                with HierarchicalPartition(numel, levels=levels, weights=weights, dtype="float64") as part:
                    assert step_bytes(comm, part, numel) == step_link_bytes(part.plan, b)
        finally:
            hpcrt.finalize()


@pytest.mark.mpi(ranks=[4], timeout=120)
def test_three_levels_send_fewer_bytes_out_of_the_pairs_than_hpz(comm, mpi_tmp_path):
    n, b, g, pairs = 1200, 8, 4, 2
    rt = init_with(comm, mpi_tmp_path, "pairs", topology_text(topologies(4)["1_node_x_2_pairs"]))
    try:
        pair_of = {r: i for i, group in enumerate(rt.topology.groups) for r in group}
        leaving = {}
        for levels in ("hpz", "3level"):
            with HierarchicalPartition(n, levels=levels, dtype="float64") as part:
                recorded = step_bytes(comm, part, n)
            leaving[levels] = sum(v for (s, d), v in recorded.items() if pair_of[s] != pair_of[d])
        assert leaving["hpz"] == 3 * pairs * (g - 1) * n * b // g
        assert leaving["3level"] == 3 * (pairs - 1) * n * b
    finally:
        hpcrt.finalize()


EMULATED_LINKS = """
links:
  intra: {alpha_us: 1, bandwidth_gbytes_s: 100}
  ib: {alpha_us: 1000, bandwidth_gbytes_s: 1}
"""


@pytest.mark.mpi(ranks=[4], timeout=120)
def test_emulation_holds_hpz_for_less_link_time_than_flat(comm, mpi_tmp_path, monkeypatch):
    from hpcrt.collectives.comm import transport as transport_module
    n, b = 4000, 8
    text = topology_text(topologies(4)["2x2"], emulate=True, links=EMULATED_LINKS)
    rt = init_with(comm, mpi_tmp_path, "emulated", text)
    held = []
    real_hold = transport_module.hold_for
    monkeypatch.setattr(transport_module, "hold_for", lambda s: (held.append(s), real_hold(s)))
    try:
        ib = rt.topology.link_costs["ib"]
        message = ib.time(n // 4 * b)

        def emulated(src, dst):
            return ib if rt.topology.node_of(src) != rt.topology.node_of(dst) else hpcrt.LinkCost(0.0, 0.0)

        per_rank = {}
        for levels in ("flat", "hpz"):
            held.clear()
            with HierarchicalPartition(n, levels=levels, dtype="float64") as part:
                zero_step(part, np.ones(n), np.ones(part.primary.stop - part.primary.start))
                predicted = predict_step(part.plan, b, emulated).seconds
            everyone = comm.allgather(sum(held))
            per_rank[levels] = max(everyone)
            assert per_rank[levels] == pytest.approx(predicted)
            messages = 18 if levels == "flat" else 8   # crossing sends of the whole step, all ranks
            assert sum(everyone) == pytest.approx(messages * message)
        assert per_rank["flat"] == pytest.approx(9 * message)
        assert per_rank["hpz"] == pytest.approx(2 * message)
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[4], timeout=120)
def test_bad_input_fails_on_every_rank(comm, mpi_tmp_path):
    rt = init_with(comm, mpi_tmp_path, "t", topology_text(topologies(4)["2x2"]))
    try:
        with pytest.raises(CollectiveMismatchError, match="numel"):
            HierarchicalPartition(10 + rt.rank % 2, levels="hpz")
        with HierarchicalPartition(10, levels="hpz", dtype="float64") as part:
            with pytest.raises(CollectiveMismatchError, match="reduce_scatter_grads"):
                part.reduce_scatter_grads(np.zeros(10 if rt.rank else 9))
            with pytest.raises(CollectiveMismatchError, match="float32"):
                part.allgather_params(np.zeros(part.primary.stop - part.primary.start, dtype=np.float32))
            with pytest.raises(CollectiveMismatchError, match="C-contiguous"):
                part.allgather_params(np.zeros(part.primary.stop - part.primary.start), out=np.zeros(20)[::2])
        with HierarchicalPartition(10, levels="flat") as part:
            with pytest.raises(ValueError, match="no secondary"):
                part.refresh_secondary(np.zeros(3, dtype=np.float32))
        for weights, match in (([1, 2, 0, 1], "positive finite"), ([1, float("nan"), 1, 1], "positive finite"),
                               ([1, 2], "one weight per rank")):
            with pytest.raises(ValueError, match=match):
                HierarchicalPartition(10, weights=weights)
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[4], timeout=120)
def test_benchmark_rows_are_correct_and_carry_predictions(comm, mpi_tmp_path):
    init_with(comm, mpi_tmp_path, "t", topology_text(topologies(4)["2_nodes_x_pair"]))
    try:
        rows = run_partition_benchmark(4096, iters=2, warmup=1)
    finally:
        hpcrt.finalize()
    measured = {r["scheme"]: r for r in rows if "median_s" in r}
    assert set(measured) == {"flat", "hpz", "3level"}
    for row in measured.values():
        assert row["wrong"] == 0 and row["inter_node_bytes"] == row["predicted_inter_node_bytes"]
        assert row["median_s"] > 0 and row["predicted_s"] > 0
    frontier = {r["scheme"]: r for r in rows if r["scheme"].startswith("frontier")}
    assert frontier["frontier-flat"]["predicted_s"] > frontier["frontier-hpz"]["predicted_s"] \
        > frontier["frontier-3level"]["predicted_s"]


def test_the_bench_command_says_a_topology_that_does_not_fit_in_one_line(launch):
    result = launch(["-m", "hpcrt.collectives.bench", "partition", "--topology", "two_nodes_emulated"], ranks=2,
                    timeout=90)
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "run it on 4 ranks" in lines[0], result.stdout + result.stderr
