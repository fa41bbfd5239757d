"""NIC-aware grouping without MPI: on small virtual topologies the chosen placement costs what the
best of all placements (brute force) costs; tp and dp stay inside a NIC class; bad layouts fail."""

import itertools

import pytest

from hpcrt import NIC, Device, LinkCost, RankInfo, Topology
from hpcrt.collectives import CommSizes, plan_groups, score_placement
from hpcrt.collectives.groups.nic import fill_grid

COSTS = {"intra": LinkCost(1e-6, 1 / 50e9), "ib": LinkCost(2e-6, 1 / 25e9), "roce": LinkCost(4e-6, 1 / 12.5e9),
         "eth": LinkCost(30e-6, 1 / 1.25e9)}
SIZES = [CommSizes(), CommSizes(tp_bytes=1e3, dp_bytes=1e9, pp_bytes=1e3),
         CommSizes(tp_bytes=1e9, dp_bytes=1e3, pp_bytes=1e8)]


def topology(nodes):
    """Nodes given as (rank count or rank list, NIC class); consecutive counts follow each other."""
    rows, first = [], 0
    for i, (ranks, nic_class) in enumerate(nodes):
        ranks = list(range(first, first + ranks)) if isinstance(ranks, int) else ranks
        first += len(ranks)
        rows += [RankInfo(r, f"n{i}", local, Device("cpu"), (NIC("x", nic_class),), nic_class)
                 for local, r in enumerate(ranks)]
    return Topology(tuple(sorted(rows, key=lambda row: row.rank)), COSTS, "eth")


def brute_force(topo, dp, pp, tp, sizes, layers):
    return min(score_placement(topo, fill_grid(order, ("pp", "dp", "tp"), dp, pp, tp), sizes, layers).total
               for order in itertools.permutations(range(topo.size)))


CASES = [
    ([(2, "ib"), (2, "roce")], [(2, 2, 1), (1, 2, 2), (2, 1, 2), (4, 1, 1), (1, 4, 1)]),
    ([([0, 2], "ib"), ([1, 3], "roce")], [(2, 2, 1), (1, 2, 2), (2, 1, 2)]),
    ([(2, "ib"), (2, "ib"), (2, "roce")], [(2, 3, 1), (1, 3, 2), (3, 2, 1), (2, 1, 3)]),
    ([(3, "ib"), (3, "roce")], [(1, 3, 2), (3, 2, 1), (1, 2, 3)]),
    ([([0, 3, 4], "ib"), ([1, 2, 5], "roce")], [(1, 3, 2), (2, 3, 1)]),
]


def test_nic_aware_costs_what_brute_force_finds_on_small_topologies():
    for nodes, layouts in CASES:
        topo = topology(nodes)
        for dp, pp, tp in layouts:
            for sizes in SIZES:
                for layers in ([1] * pp, [pp - s + 2 for s in range(pp)]):
                    best = brute_force(topo, dp, pp, tp, sizes, layers)
                    chosen = plan_groups(topo, dp=dp, pp=pp, tp=tp, sizes=sizes, layers_per_stage=layers)
                    assert chosen.cost.total == pytest.approx(best, rel=1e-12), (nodes, dp, pp, tp, sizes, layers)
                    default = plan_groups(topo, dp=dp, pp=pp, tp=tp, strategy="default", sizes=sizes,
                                          layers_per_stage=layers)
                    assert chosen.cost.total <= default.cost.total * (1 + 1e-12)


def test_eight_ranks_three_classes_against_brute_force():
    topo = topology([(4, "ib"), (2, "roce"), (2, "eth")])
    best = brute_force(topo, 2, 2, 2, CommSizes(), [1, 1])
    assert plan_groups(topo, dp=2, pp=2, tp=2).cost.total == pytest.approx(best, rel=1e-12)


def test_holmes_placement_keeps_tp_and_dp_inside_a_class_and_pipelines_across():
    topo = topology([([0, 2, 4, 6], "ib"), ([1, 3, 5, 7], "roce")])   # round-robin ranks, two classes
    plan = plan_groups(topo, dp=2, pp=2, tp=2)
    nic = {r.rank: r.nic_class for r in topo.ranks}
    for axis in ("tp", "dp"):
        assert all(len({nic[r] for r in group}) == 1 for group in plan.groups(axis)), axis
    assert all(len({nic[r] for r in group}) == 2 for group in plan.groups("pp"))
    default = plan_groups(topo, dp=2, pp=2, tp=2, strategy="default")
    assert default.groups("tp")[0] == (0, 1) and default.cost.total > plan.cost.total
    assert plan.group_of("tp", plan.grid[0][0][0]) == plan.grid[0][0]
    assert plan.coords(plan.grid[1][0][1]) == (1, 0, 1)


def test_uneven_stages_put_the_heavy_stage_on_the_fast_class():
    topo = topology([(1, "ib"), (1, "eth"), (1, "ib"), (1, "eth")])   # one rank per node: dp leaves the node
    sizes = CommSizes(tp_bytes=0, dp_bytes=64 << 20, pp_bytes=1 << 20)
    nic = {r.rank: r.nic_class for r in topo.ranks}
    for layers, heavy in (([8, 1], 0), ([1, 8], 1)):
        plan = plan_groups(topo, dp=2, pp=2, tp=1, sizes=sizes, layers_per_stage=layers)
        assert {nic[r] for row in plan.grid[heavy] for r in row} == {"ib"}, layers


@pytest.mark.parametrize("kwargs, match", [
    (dict(dp=2, pp=2, tp=2), r"dp·pp·tp = 2·2·2 = 8 does not match the 4 ranks"),
    (dict(dp=0, pp=4, tp=1), "dp must be a positive integer"),
    (dict(dp=2, pp=2, tp=1, strategy="random"), "unknown grouping strategy"),
    (dict(dp=2, pp=2, tp=1, layers_per_stage=[1]), "layers_per_stage must hold 2 positive integers"),
    (dict(dp=2, pp=2, tp=1, layers_per_stage=[1, 0]), "layers_per_stage"),
])
def test_bad_layouts_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_groups(topology([(2, "ib"), (2, "roce")]), **kwargs)


def test_bad_message_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="CommSizes.dp_bytes must be a non-negative finite"):
        CommSizes(dp_bytes=float("nan"))
    with pytest.raises(ValueError, match="unknown parallel axis"):
        plan_groups(topology([(2, "ib")]), dp=2, pp=1, tp=1).groups("ep")
