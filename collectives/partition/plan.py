"""Where every shard of a hierarchically partitioned flat buffer lives, computed the same way on
every rank without communication.

Ranks lie in the buffer in the order of their level coordinates (coordinate 0 most significant),
each owning one contiguous *primary* shard. Then the ranks sharing coordinates 0..d−1 own one
contiguous *chunk* (depth d): depth 0 is the whole buffer, depth k (k levels) the primary shard.
Reduce-scatter stage j turns each rank's depth-j chunk into its depth-(j+1) chunk among its
stage-j peers; all-gather runs the stages backwards. The *secondary* shard (hpZ) is the depth
k−1 chunk: what the outermost stage's all-gather yields, shared by the rank's level-(k−2) group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence, Union

from hpcrt.topology.table import Topology

from hpcrt.collectives.partition.levels import LevelSpec, coordinates, resolve_levels, stage_peers

Weights = Union[None, str, Sequence[float]]


@dataclass(frozen=True)
class PartitionPlan:
    """The layout and the stages of a partition of ``numel`` elements over ``members`` (world ranks).

    Ranks below are positions in ``members`` (the partition communicator's ranks).
    """

    numel: int
    members: tuple
    level_names: tuple
    stages: tuple
    """Per level, its peer groups (tuples of ranks ordered by position)."""
    bounds: tuple
    """Per rank, its primary shard ``(start, stop)``."""
    chunks: dict
    """Per coordinate prefix, the chunk ``(start, stop)`` owned by the ranks sharing it."""
    coords: tuple

    @property
    def depth(self) -> int:
        """The number of levels (and of stages)."""
        return len(self.stages)

    @property
    def size(self) -> int:
        """The number of ranks."""
        return len(self.members)

    def chunk(self, rank: int, depth: int) -> tuple[int, int]:
        """The chunk ``rank`` holds after ``depth`` reduce-scatter stages."""
        return self.chunks[self.coords[rank][:depth]]

    def secondary(self, rank: int) -> Optional[tuple[int, int]]:
        """The hpZ secondary shard (the depth k−1 chunk), or None for a single level."""
        return self.chunk(rank, self.depth - 1) if self.depth > 1 else None

    def peers(self, rank: int, stage: int) -> tuple:
        """The peer group of ``rank`` at ``stage``."""
        return next(group for group in self.stages[stage] if rank in group)

    def blocks(self, rank: int, stage: int) -> list[tuple[int, int]]:
        """The pieces of ``rank``'s stage chunk, one per peer in peer order (their next chunks)."""
        return [self.chunk(q, stage + 1) for q in self.peers(rank, stage)]


def make_plan(topology: Topology, numel: int, levels: LevelSpec = "hpz", weights: Weights = None,
              members: Optional[Sequence[int]] = None) -> PartitionPlan:
    """The plan of ``numel`` elements over ``members`` (default: every rank) with ``levels`` and ``weights``.

    ``weights``: None (equal shards), ``"memory"`` (each rank's device memory from the topology)
    or one positive finite number per member; shard sizes are proportional to them.
    """
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel must be a non-negative integer, got {numel!r}")
    members = tuple(range(topology.size) if members is None else members)
    resolved = resolve_levels(topology, levels, members)
    coords = coordinates(resolved, len(members))
    order = sorted(range(len(members)), key=lambda r: coords[r])
    weight = rank_weights(topology, weights, members)
    sizes = shard_sizes(numel, [weight[r] for r in order])
    bounds: list = [None] * len(members)
    start = 0
    for r, n in zip(order, sizes):
        bounds[r] = (start, start + n)
        start += n
    chunks: dict = {}
    for r in order:
        for d in range(len(resolved) + 1):
            lo, hi = chunks.get(coords[r][:d], bounds[r])
            chunks[coords[r][:d]] = (min(lo, bounds[r][0]), max(hi, bounds[r][1]))
    stages = tuple(stage_peers(resolved, coords))
    return PartitionPlan(numel, members, tuple(n for n, _ in resolved), stages, tuple(bounds), chunks, tuple(coords))


def rank_weights(topology: Topology, weights: Weights, members: Sequence[int]) -> list[float]:
    """One positive finite weight per member; a clear error for anything else."""
    if weights is None:
        return [1.0] * len(members)
    if isinstance(weights, str):
        if weights != "memory":
            raise ValueError(f"weights must be None, 'memory' or a list of numbers, got {weights!r}")
        memory = [topology.ranks[w].device.memory_bytes for w in members]
        unknown = [w for w, m in zip(members, memory) if not m]
        if unknown:
            raise ValueError(f"weights='memory': the topology does not know the device memory of ranks {unknown}")
        return [float(m) for m in memory]
    weights = list(weights)
    if len(weights) != len(members):
        raise ValueError(f"weights: expected one weight per rank ({len(members)}), got {len(weights)}")
    bad = {r: w for r, w in enumerate(weights)
           if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0}
    if bad:
        raise ValueError(f"weights must be positive finite numbers; bad weights by rank: {bad}")
    return [float(w) for w in weights]


def shard_sizes(numel: int, weights: Sequence[float]) -> list[int]:
    """``numel`` split in proportion to ``weights`` by largest remainder (exact fractions; ties to
    the earlier entry), so equal weights give numpy.array_split's sizes."""
    total = sum(Fraction(w) for w in weights)
    quotas = [numel * Fraction(w) / total for w in weights]
    sizes = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - sizes[i]), i))
    for i in by_remainder[:numel - sum(sizes)]:
        sizes[i] += 1
    return sizes
