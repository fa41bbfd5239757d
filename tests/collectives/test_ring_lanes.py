"""The ring engine's lanes, exactly: one clockwise lane on the ring (and on the bidirectional ring
at two ranks), two opposite lanes with their own tags from three ranks, and at even p the piece for
the opposite rank split in two halves, the larger one clockwise."""

import pytest

from hpcrt.collectives.rings.engine import Lane, ring_lanes
from hpcrt.core.tags import RING

BLOCKS = {1: [(0, 3)], 2: [(0, 3), (3, 5)], 3: [(0, 3), (3, 5), (5, 7)], 4: [(0, 3), (3, 5), (5, 7), (7, 7)]}


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_the_ring_is_one_clockwise_lane_of_p_minus_1_hops(p):
    pieces = tuple(BLOCKS[p])
    assert ring_lanes(BLOCKS[p], "ring") == [Lane(+1, pieces, pieces, p - 1, RING)]


def test_the_bidirectional_ring_at_two_ranks_is_the_ring():
    pieces = tuple(BLOCKS[2])
    assert ring_lanes(BLOCKS[2], "bidir_ring") == [Lane(+1, pieces, pieces, 1, RING)]


def test_at_odd_p_each_way_carries_whole_pieces_half_the_ring_round():
    pieces = tuple(BLOCKS[3])
    assert ring_lanes(BLOCKS[3], "bidir_ring") == [Lane(+1, pieces, pieces, 1, RING + 1),
                                                   Lane(-1, pieces, pieces, 1, RING + 2)]


def test_at_even_p_the_opposite_rank_gets_half_a_piece_each_way():
    pieces = tuple(BLOCKS[4])
    first, second = ((0, 2), (3, 4), (5, 6), (7, 7)), ((2, 3), (4, 5), (6, 7), (7, 7))
    lanes = ring_lanes(BLOCKS[4], "bidir_ring")
    assert lanes == [Lane(+1, pieces, first, 2, RING + 1), Lane(-1, pieces, second, 2, RING + 2)]
    assert all(isinstance(lane.hops, int) for lane in lanes)
    assert [lanes[0].part(1, far_hop=True), lanes[0].part(1, far_hop=False)] == [(3, 4), (3, 5)]
