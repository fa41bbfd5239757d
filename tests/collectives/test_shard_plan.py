"""Partition plans whose buffer order is not the rank order (hpZ over consecutive nodes puts the
node-local rank first), with exact shards, chunks and secondaries; the largest-remainder rule;
member subsets; and the refusals of bad sizes and weights."""

import pytest

from hpcrt.collectives import make_plan
from hpcrt.collectives.partition.plan import shard_sizes

from test_partition_plan import topology

TWO_NODES = topology([[0, 1], [2, 3]])


def test_hpz_lays_ranks_out_in_coordinate_order_with_exact_chunks():
    plan = make_plan(TWO_NODES, 8, "hpz", [1, 1, 1, 3])
    # coordinates (local rank, node): buffer order 0, 2, 1, 3; weights 1, 1, 1, 3 -> 2, 1, 1, 4 of 8
    assert plan.coords == ((0, 0), (1, 0), (0, 1), (1, 1))
    assert plan.bounds == ((0, 2), (3, 4), (2, 3), (4, 8))
    assert plan.chunks == {(): (0, 8), (0,): (0, 3), (1,): (3, 8), (0, 0): (0, 2), (0, 1): (2, 3), (1, 0): (3, 4),
                           (1, 1): (4, 8)}
    assert [plan.secondary(r) for r in range(4)] == [(0, 3), (3, 8), (0, 3), (3, 8)]
    assert (plan.numel, plan.level_names, plan.members) == (8, ("node", "world"), (0, 1, 2, 3))


def test_levels_default_to_hpz():
    assert make_plan(TWO_NODES, 8) == make_plan(TWO_NODES, 8, "hpz")


def test_a_single_level_has_no_secondary():
    plan = make_plan(TWO_NODES, 8, "flat")
    assert plan.depth == 1 and [plan.secondary(r) for r in range(4)] == [None] * 4


def test_members_are_the_given_ranks_only():
    plan = make_plan(TWO_NODES, 7, "flat", members=(1, 3))
    assert (plan.members, plan.bounds) == ((1, 3), ((0, 4), (4, 7)))


def test_largest_remainder_goes_to_the_largest_fraction_then_the_earlier_rank():
    assert shard_sizes(6, [1, 1, 3]) == [1, 1, 4]      # quotas 1.2, 1.2, 3.6
    assert shard_sizes(7, [3, 1, 3]) == [3, 1, 3]      # exact
    assert shard_sizes(5, [1, 2, 1, 2]) == [1, 2, 1, 1]  # quotas 5/6, 5/3, 5/6, 5/3: ties to the earlier


@pytest.mark.parametrize("numel", [-1, 2.0, True, "8"])
def test_bad_sizes_are_refused(numel):
    with pytest.raises(ValueError, match=f"numel must be a non-negative integer, got {numel!r}"):
        make_plan(TWO_NODES, numel, "flat")


@pytest.mark.parametrize("weights, bad", [([True, 1, 1, 1], "{0: True}"), ([1, "2", 1, 1], "{1: '2'}"),
                                          ([1, 1, float("nan"), 0], "{2: nan, 3: 0}")])
def test_bad_weights_are_refused_naming_each_rank(weights, bad):
    with pytest.raises(ValueError, match=f"weights must be positive finite numbers; bad weights by rank: {bad}"):
        make_plan(TWO_NODES, 8, "flat", weights)
