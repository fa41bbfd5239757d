"""The link-level part of the α-β model, read from a :class:`~hpcrt.costmodel.table.CostTable`:
the pace of a ring or chain over a set of ranks, alone and as the job measured its schedules."""

from __future__ import annotations

from typing import Optional

from hpcrt.costmodel.table import CostTable
from hpcrt.topology.table import INTRA_NODE, LinkCost, Topology

CHAIN = "chain"
SHIFT = "shift"
SCHEDULES = (CHAIN, SHIFT)
"""A hop of a token passed along all ranks, and a round in which every rank exchanges at once."""


def bottleneck_link(costs: CostTable, topology: Topology, ranks: Optional[list[int]] = None) -> LinkCost:
    """The slowest α and the slowest β among the links of a ring over ``ranks`` (default: all).

    A ring or chain collective runs at the pace of its slowest hop; one rank alone is charged
    the intra-node cost.
    """
    ranks = list(range(topology.size)) if ranks is None else ranks
    return costs.on(topology).slowest_link(ranks) or costs.links[INTRA_NODE]


def schedule_link(costs: CostTable, topology: Topology, schedule: str, ranks: Optional[list[int]] = None,
                  ring: bool = True) -> LinkCost:
    """The α-β a hop of ``schedule`` (CHAIN or SHIFT) pays among ``ranks`` (default: all): no less
    than the slowest link alone (:meth:`Topology.slowest_link`) nor than the schedule as measured.

    A table without schedule measurements (nominal costs, one rank) gives the slowest link alone.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    ranks = list(range(topology.size)) if ranks is None else ranks
    alone = costs.on(topology).slowest_link(ranks, ring=ring) or costs.links[INTRA_NODE]
    measured = costs.chain if schedule == CHAIN else costs.shift
    if measured is None:
        return alone
    return LinkCost(max(alone.alpha, measured.alpha), max(alone.beta, measured.beta))


__all__ = ["CHAIN", "SHIFT", "SCHEDULES", "bottleneck_link", "schedule_link"]
