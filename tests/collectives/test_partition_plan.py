"""The partition plan without MPI: shard layout, weights, level checks, byte formulas and the
α-β prediction, on Topology objects built directly (up to Frontier's 384 GCDs)."""

import pytest

from hpcrt import NIC, Device, LinkCost, RankInfo, Topology
from hpcrt.collectives import PartitionLevelError, block_bounds, inter_node_bytes, make_plan, predict_step, \
    step_link_bytes
from hpcrt.collectives.partition.bench import frontier_prediction
from hpcrt.collectives.partition.plan import shard_sizes

COSTS = {"intra": LinkCost(1e-6, 1e-11), "ib": LinkCost(2e-6, 4e-11)}


def topology(node_ranks, groups=(), memory=None):
    """Nodes given as lists of ranks; optional sub-node groups and per-rank device memory."""
    rows = []
    for i, ranks in enumerate(node_ranks):
        for local, r in enumerate(ranks):
            device = Device("gpu", local, "test", None if memory is None else memory[r])
            rows.append(RankInfo(r, f"n{i}", local, device, (NIC("ib0", "ib"),), "ib"))
    return Topology(tuple(sorted(rows, key=lambda row: row.rank)), COSTS, groups=tuple(groups))


def consecutive(nodes, per_node, pair=0):
    node_ranks = [list(range(i * per_node, (i + 1) * per_node)) for i in range(nodes)]
    groups = [tuple(range(r, r + pair)) for r in range(0, nodes * per_node, pair)] if pair else ()
    return topology(node_ranks, groups)


def test_shards_cover_the_buffer_once_for_every_scheme_size_and_weighting():
    topo = consecutive(3, 4, pair=2)
    for levels in ("flat", "hpz", "3level"):
        for numel in (0, 1, 5, 12, 1001):
            for weights in (None, list(range(1, 13)), [1e-6] * 11 + [1.0]):
                plan = make_plan(topo, numel, levels, weights)
                covered = sorted(plan.bounds)
                assert covered[0][0] == 0 and covered[-1][1] == numel
                assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
                for r in range(12):
                    lo, hi = plan.secondary(r) or (0, numel)
                    assert lo <= plan.bounds[r][0] <= plan.bounds[r][1] <= hi


def test_equal_weights_give_array_split_sizes_and_flat_keeps_rank_order():
    for p in range(1, 9):
        for numel in (0, 1, p - 1, p, 3 * p + 2):
            plan = make_plan(topology([list(range(p))]), numel, "flat")
            assert list(plan.bounds) == block_bounds(numel, p)


def test_weighted_shard_sizes_follow_the_weights():
    assert shard_sizes(10, [1, 1, 2]) == [3, 2, 5]
    assert shard_sizes(1000, [1, 2, 3, 4]) == [100, 200, 300, 400]
    assert shard_sizes(2, [1, 1, 1, 1]) == [1, 1, 0, 0]
    memory = {0: 16 << 30, 1: 16 << 30, 2: 48 << 30, 3: 48 << 30}
    plan = make_plan(topology([[0, 1], [2, 3]], memory=memory), 800, "hpz", "memory")
    assert [b - a for a, b in plan.bounds] == [100, 100, 300, 300]


def test_hpz_on_interleaved_nodes_groups_node_mates_then_local_peers():
    plan = make_plan(topology([[0, 2], [1, 3]]), 8, "hpz")
    assert plan.stages[0] == ((0, 2), (1, 3))          # inside each node
    assert plan.stages[1] == ((0, 1), (2, 3))          # across nodes, same local index
    assert plan.secondary(0) == plan.secondary(1) != plan.secondary(2)


@pytest.mark.parametrize("weights, match", [
    ([1, 0, 1, 1], "positive finite"), ([1, -2, 1, 1], "positive finite"), ([1, float("inf"), 1, 1], "positive"),
    ([1, 1], "one weight per rank"), ("speed", "None, 'memory'"), ("memory", "device memory of ranks"),
])
def test_bad_weights_are_clear_errors(weights, match):
    with pytest.raises(ValueError, match=match):
        make_plan(topology([[0, 1], [2, 3]]), 10, "hpz", weights)


@pytest.mark.parametrize("levels, match", [
    ("zero4", "unknown partition scheme"),
    (["rack", "world"], "unknown level 'rack'"),
    ("3level", "level 'group'.*no sub-node groups"),
    ([[[0, 1], [2]], "world"], r"level 'level\[0\]' does not partition ranks 0..3: missing \[3\]"),
    ([[[0, 1, 2], [3]], "world"], r"level 'level\[0\]': groups of different sizes \[1, 3\]"),
    ([[[0, 1], [2, 3]], [[0, 2], [1, 3]], "world"], r"level 'level\[1\]' does not nest.*ranks \[0, 1\]"),
    (["node"], "outermost level 'node' must be one group"),
    ([], "at least one level"),
])
def test_inconsistent_levels_name_the_level_and_the_ranks(levels, match):
    with pytest.raises(PartitionLevelError, match=match):
        make_plan(topology([[0, 1], [2, 3]]), 10, levels)


def test_inter_node_bytes_at_sixteen_ranks_follow_the_formulas():
    n, b, p, nodes, g = 1600, 4, 16, 4, 4
    topo = consecutive(nodes, g, pair=2)
    inter = {s: inter_node_bytes(step_link_bytes(make_plan(topo, n, s), b), topo) for s in ("flat", "hpz", "3level")}
    assert inter["flat"] == 3 * (p - 1) * n * b // g
    assert inter["hpz"] == inter["3level"] == 2 * (nodes - 1) * n * b
    round_robin = topology([list(range(i, p, nodes)) for i in range(nodes)])
    assert inter_node_bytes(step_link_bytes(make_plan(round_robin, n, "flat"), b), round_robin) \
        == 3 * (p - 1) * n * b


def test_prediction_of_one_ring_stage_is_the_ring_formula():
    topo, n, b = topology([list(range(4))]), 4000, 8
    link = LinkCost(5e-6, 1e-9)
    prediction = predict_step(make_plan(topo, n, "flat"), b, lambda s, d: link, gamma=2e-10)
    ring = 3 * (link.alpha + n // 4 * b * link.beta)
    assert prediction.phases["allgather_forward"] == pytest.approx(ring)
    assert prediction.phases["reduce_scatter"] == pytest.approx(ring + 3 * n // 4 * b * 2e-10)
    assert prediction.seconds == pytest.approx(sum(prediction.phases.values()))


def test_frontier_model_ranks_three_levels_before_hpz_before_flat():
    rows = {r["scheme"]: r for r in frontier_prediction(numel=384 * 10_000)}
    assert rows["frontier-flat"]["ranks"] == 384
    assert rows["frontier-flat"]["predicted_s"] > rows["frontier-hpz"]["predicted_s"] \
        > rows["frontier-3level"]["predicted_s"]
    assert rows["frontier-3level"]["predicted_ratio_vs_hpz"] > 1.2
