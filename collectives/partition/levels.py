"""The levels of a hierarchical partition: nested groupings of ranks, innermost first (GCD pair →
node → world), taken from the topology or given as rank lists, checked, and turned into the
per-rank coordinates and per-stage peer groups that the level-wise collectives run over.

A rank's coordinate at level 0 is its position in its level-0 group; at level j > 0 it is the
position of its level-(j−1) group among those inside its level-j group (ordered by lowest rank).
At stage j the *peers* of a rank are the ranks of its level-j group with the same coordinates
0..j−1: one per level-(j−1) group, ordered by coordinate j (e.g. across nodes, the ranks with
the same local index).
"""

from __future__ import annotations

from typing import Sequence, Union

from hpcrt.topology.table import Topology

SCHEMES = {"flat": ("world",), "hpz": ("node", "world"), "3level": ("group", "node", "world")}
"""Named schemes: flat ZeRO-3, ZeRO++ hpZ (node → world), the Frontier 3-level scheme."""

LevelSpec = Union[str, Sequence[Union[str, Sequence[Sequence[int]]]]]


class PartitionLevelError(ValueError):
    """Levels that do not nest into a regular hierarchy over the ranks."""


def resolve_levels(topology: Topology, levels: LevelSpec, members: Sequence[int]) -> list[tuple]:
    """``(name, groups)`` per level, innermost first, over the positions of ``members`` (world ranks).

    ``levels`` is a scheme name of :data:`SCHEMES` or a sequence whose items are level names
    (``group``: the topology's sub-node groups, ``node``, ``world``) or explicit lists of world
    ranks. Groups are restricted to ``members`` and renumbered to positions in it.
    """
    if isinstance(levels, str):
        if levels not in SCHEMES:
            raise PartitionLevelError(f"unknown partition scheme {levels!r}; expected one of {', '.join(SCHEMES)} "
                                      "or a sequence of levels")
        levels = SCHEMES[levels]
    if not levels:
        raise PartitionLevelError("a partition needs at least one level (the outermost being 'world')")
    index = {w: i for i, w in enumerate(members)}
    resolved = []
    for i, level in enumerate(levels):
        name, groups = (level, _named_groups(topology, level)) if isinstance(level, str) else (f"level[{i}]", level)
        local = [tuple(index[r] for r in g if r in index) for g in groups]
        resolved.append((name, tuple(g for g in local if g)))
    check_levels(resolved, len(members))
    return resolved


def _named_groups(topology: Topology, name: str) -> list:
    if name == "world":
        return [list(range(topology.size))]
    if name == "node":
        return [topology.ranks_on(node) for node in topology.nodes]
    if name == "group":
        if not topology.groups:
            raise PartitionLevelError(f"level 'group': the topology ({topology.source}) defines no sub-node groups "
                                      "(give each node 'groups' in a topology file)")
        return list(topology.groups)
    raise PartitionLevelError(f"unknown level {name!r}; expected group, node, world or a list of rank lists")


def check_levels(levels: list[tuple], size: int) -> None:
    """Each level partitions ranks 0..size−1 into groups of one size, each the union of whole
    groups of the level inside it, and the outermost level is one group of every rank."""
    inner: tuple = ()
    for name, groups in levels:
        seen = sorted(r for g in groups for r in g)
        if seen != list(range(size)):
            missing = sorted(set(range(size)) - set(seen))
            twice = sorted({r for r in seen if seen.count(r) > 1})
            raise PartitionLevelError(f"level '{name}' does not partition ranks 0..{size - 1}: "
                                      f"missing {missing}, repeated {twice}")
        sizes = {len(g) for g in groups}
        if len(sizes) > 1:
            raise PartitionLevelError(f"level '{name}': groups of different sizes {sorted(sizes)}: "
                                      f"{[list(g) for g in groups]}")
        for g in inner:
            parents = [p for p in groups if set(g) & set(p)]
            if len(parents) != 1 or not set(g) <= set(parents[0]):
                raise PartitionLevelError(f"level '{name}' does not nest the level inside it: ranks {list(g)} "
                                          f"are split across groups {[list(p) for p in parents]}")
        inner = groups
    if len(levels[-1][1]) != 1:
        raise PartitionLevelError(f"the outermost level '{levels[-1][0]}' must be one group of all ranks "
                                  f"(add 'world'), got {[list(g) for g in levels[-1][1]]}")


def coordinates(levels: list[tuple], size: int) -> list[tuple[int, ...]]:
    """Every rank's coordinates, one per level (see the module docstring)."""
    coords: list[list[int]] = [[] for _ in range(size)]
    inner: tuple = tuple((r,) for r in range(size))
    for _, groups in levels:
        for group in groups:
            members = set(group)
            children = sorted((c for c in inner if c[0] in members), key=min)
            for position, child in enumerate(children):
                for r in child:
                    coords[r].append(position)
        inner = groups
    return [tuple(c) for c in coords]


def stage_peers(levels: list[tuple], coords: list[tuple[int, ...]]) -> list[tuple]:
    """Per stage j, the peer groups: ranks of one level-j group sharing coordinates 0..j−1,
    each ordered by coordinate j."""
    stages = []
    for j, (_, groups) in enumerate(levels):
        peers = []
        for group in groups:
            by_prefix: dict = {}
            for r in group:
                by_prefix.setdefault(coords[r][:j], []).append(r)
            peers += [tuple(sorted(rs, key=lambda r: coords[r][j])) for _, rs in sorted(by_prefix.items())]
        stages.append(tuple(peers))
    return stages
