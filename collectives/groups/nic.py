"""NIC-aware process groups (Holmes): place a (pipeline, data, tensor)-parallel layout on the ranks
so that tp and dp groups stay inside one NIC class where the layout allows and pipeline stages
map onto NIC classes, scoring every candidate placement with :mod:`.group_cost`.

``default`` is Megatron's placement: ranks in order, tp innermost, then dp, pp outermost.
``nic_aware`` orders the ranks by NIC class (then node, then rank) for every order of the classes,
fills the grid in every nesting order of the three axes (Holmes's, pp outermost and tp innermost,
first), forwards and snaking, and keeps the cheapest (ties go to the earlier candidate). Where the
placements that link costs can tell apart are few (small jobs), it scores them all and keeps a
cheaper one if there is one, so the result is the optimum of the cost model there.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

from hpcrt.core.runtime import get_runtime
from hpcrt.topology.table import Topology

from hpcrt.collectives.comm.transport import intracomm
from hpcrt.collectives.costmodel.groups import CommSizes, GroupCost, score_placement

STRATEGIES = ("nic_aware", "default")
AXES = ("pp", "dp", "tp")
EXHAUSTIVE_LIMIT = 40_320
"""Up to this many distinct placements (:func:`arrangement_count`; 8! covers every job of up to 8
ranks), ``nic_aware`` scores them all."""


@dataclass(frozen=True)
class GroupPlan:
    """A placement: ``grid[s][d][t]`` is the world rank of stage s, dp index d, tp index t."""

    dp: int
    pp: int
    tp: int
    grid: tuple
    cost: GroupCost
    strategy: str

    def coords(self, rank: int) -> tuple[int, int, int]:
        """``(stage, dp index, tp index)`` of ``rank``."""
        return next((s, d, t) for s, stage in enumerate(self.grid) for d, row in enumerate(stage)
                    for t, r in enumerate(row) if r == rank)

    def groups(self, axis: str) -> list[tuple[int, ...]]:
        """Every group along ``axis`` (``pp``, ``dp`` or ``tp``), each in index order."""
        cells = {(s, d, t): r for s, stage in enumerate(self.grid) for d, row in enumerate(stage)
                 for t, r in enumerate(row)}
        along = AXES.index(_axis(axis))
        found: dict = {}
        for key in sorted(cells):
            found.setdefault(key[:along] + key[along + 1:], []).append(cells[key])
        return [tuple(g) for g in found.values()]

    def group_of(self, axis: str, rank: int) -> tuple[int, ...]:
        """The group along ``axis`` that holds ``rank``."""
        return next(g for g in self.groups(axis) if rank in g)


def plan_groups(topology: Topology, *, dp: int, pp: int, tp: int, strategy: str = "nic_aware",
                sizes: Optional[CommSizes] = None, layers_per_stage: Optional[Sequence[int]] = None) -> GroupPlan:
    """The placement of a dp × pp × tp layout on ``topology`` by ``strategy`` (serial, no MPI).

    ``layers_per_stage``: layers of each pipeline stage, uneven allowed (Holmes's
    ``--hetero-pipeline-stages``): a stage's tp and dp traffic scales with its layers, so the
    search puts heavy stages on fast NIC classes. Default: one layer each.
    """
    sizes = sizes or CommSizes()
    layers = _check_layout(topology.size, dp, pp, tp, strategy, layers_per_stage)
    if strategy == "default":
        grid = fill_grid(list(range(topology.size)), AXES, dp, pp, tp)
        return GroupPlan(dp, pp, tp, grid, score_placement(topology, grid, sizes, layers), strategy)
    grids = [fill_grid(order, axes, dp, pp, tp, snake)
             for order in class_orders(topology) for axes in itertools.permutations(AXES) for snake in (False, True)]
    cost, grid = min(((score_placement(topology, g, sizes, layers), g) for g in grids), key=lambda c: c[0].total)
    if arrangement_count(topology) <= EXHAUSTIVE_LIMIT:
        for g in (fill_grid(order, AXES, dp, pp, tp) for order in node_arrangements(topology)):
            trial = score_placement(topology, g, sizes, layers)
            if trial.total < cost.total * (1 - 1e-12):
                cost, grid = trial, g
    return GroupPlan(dp, pp, tp, grid, cost, strategy)


def arrangement_count(topology: Topology) -> int:
    """How many placements differ in more than which rank of a node sits where: p! / Π nᵢ!."""
    count = math.factorial(topology.size)
    for node in topology.nodes:
        count //= math.factorial(len(topology.ranks_on(node)))
    return count


def node_arrangements(topology: Topology) -> Iterator[list[int]]:
    """Every rank order up to exchanging ranks of one node (which link costs cannot tell apart)."""
    left = {node: topology.ranks_on(node) for node in topology.nodes}

    def extend(prefix: list[int]) -> Iterator[list[int]]:
        if len(prefix) == topology.size:
            yield list(prefix)
        for node, ranks in left.items():
            if ranks:
                prefix.append(ranks.pop(0))
                yield from extend(prefix)
                ranks.insert(0, prefix.pop())

    return extend([])


def class_orders(topology: Topology) -> list[list[int]]:
    """The ranks sorted by NIC class, then node, then rank, for every order of the classes."""
    classes = list(dict.fromkeys(r.nic_class for r in topology.ranks))
    nodes = topology.nodes
    return [sorted(range(topology.size), key=lambda r: (ordering.index(topology.ranks[r].nic_class),
                                                        nodes.index(topology.ranks[r].node), r))
            for ordering in itertools.permutations(classes)]


def fill_grid(order: Sequence[int], axes: Sequence[str], dp: int, pp: int, tp: int, snake: bool = False) -> tuple:
    """``grid[s][d][t]`` filled from ``order`` with ``axes[0]`` outermost and ``axes[2]`` innermost;
    ``snake`` runs the innermost axis backwards in every other row (so a row's end and the next
    row's start, often node-mates, share a position)."""
    extent = {"pp": pp, "dp": dp, "tp": tp}
    grid = [[[0] * tp for _ in range(dp)] for _ in range(pp)]
    ranks = iter(order)
    for index in itertools.product(*(range(extent[a]) for a in axes)):
        if snake and (index[0] * extent[axes[1]] + index[1]) % 2:
            index = (index[0], index[1], extent[axes[2]] - 1 - index[2])
        at = dict(zip(axes, index))
        grid[at["pp"]][at["dp"]][at["tp"]] = next(ranks)
    return tuple(tuple(tuple(row) for row in stage) for stage in grid)


@dataclass
class ProcessGroups:
    """This rank's tp, dp and pp communicators of a :class:`GroupPlan` (ranks in index order)."""

    plan: GroupPlan
    tp: Any
    dp: Any
    pp: Any

    def free(self) -> None:
        """Release the three communicators (collective)."""
        for comm in (self.tp, self.dp, self.pp):
            comm.Free()


def make_groups(topology: Optional[Topology] = None, *, dp: int, pp: int, tp: int, strategy: str = "nic_aware",
                sizes: Optional[CommSizes] = None, layers_per_stage: Optional[Sequence[int]] = None,
                comm: Optional[Any] = None) -> ProcessGroups:
    """Plan the placement (:func:`plan_groups`) and split ``comm`` (default: the runtime's, whose
    ranks are the topology's) into this rank's tp, dp and pp groups. Collective over ``comm``."""
    runtime = get_runtime()
    topology = topology or runtime.topology
    comm = intracomm(comm, "make_groups")
    if comm.size != topology.size:
        raise ValueError(f"make_groups: the communicator has {comm.size} ranks but the topology {topology.size}")
    plan = plan_groups(topology, dp=dp, pp=pp, tp=tp, strategy=strategy, sizes=sizes,
                       layers_per_stage=layers_per_stage)
    split = {}
    for axis in AXES:
        groups = plan.groups(axis)
        mine = next(g for g in groups if comm.rank in g)
        split[axis] = comm.Split(groups.index(mine), mine.index(comm.rank))
    return ProcessGroups(plan, split["tp"], split["dp"], split["pp"])


def _axis(axis: str) -> str:
    if axis not in AXES:
        raise ValueError(f"unknown parallel axis {axis!r}; expected one of {', '.join(AXES)}")
    return axis


def _check_layout(size: int, dp: int, pp: int, tp: int, strategy: str, layers: Optional[Sequence[int]]) -> list[int]:
    """The layers per stage, after checking the layout against the ranks; clear errors otherwise."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown grouping strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    for name, value in (("dp", dp), ("pp", pp), ("tp", tp)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if dp * pp * tp != size:
        raise ValueError(f"dp·pp·tp = {dp}·{pp}·{tp} = {dp * pp * tp} does not match the {size} ranks of the "
                         "topology")
    layers = [1] * pp if layers is None else list(layers)
    if len(layers) != pp or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
        raise ValueError(f"layers_per_stage must hold {pp} positive integers (one per pipeline stage), got {layers}")
    return layers
