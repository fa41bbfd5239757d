"""The α-β score of a (pipeline, data, tensor)-parallel placement: its estimated communication
time per step on the topology's link classes, for message sizes the caller chooses.

A placement is a grid ``grid[s][d][t]`` of world ranks (stage s, data-parallel index d,
tensor-parallel index t). Stage s with ``layers[s]`` layers costs, for its slowest group,
``layers[s]`` ring allreduces of ``tp_bytes`` over each tp group plus one ring allreduce of
``layers[s]·dp_bytes`` (its gradients) over each dp group; a ring runs at the pace of its slowest
hop. Stages work at the same time, so the slowest stage counts; then the activations cross each
pipeline boundary in turn (``pp_bytes`` point to point, the slowest of the dp·tp chains). Only
pipeline traffic needs to cross NIC classes in a good placement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from hpcrt.topology.table import LinkCost, Topology

from hpcrt.collectives.costmodel.rings import predict_ring


@dataclass(frozen=True)
class CommSizes:
    """Bytes per step that a placement's score charges to each kind of traffic."""

    tp_bytes: float = 8 << 20
    """One tensor-parallel allreduce of one layer (activations)."""
    dp_bytes: float = 32 << 20
    """One layer's gradients, allreduced over its data-parallel group."""
    pp_bytes: float = 8 << 20
    """Activations sent across one pipeline boundary."""

    def __post_init__(self) -> None:
        for name in ("tp_bytes", "dp_bytes", "pp_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"CommSizes.{name} must be a non-negative finite number of bytes, got {value!r}")


@dataclass(frozen=True)
class GroupCost:
    """Estimated seconds per step: the total and its tensor-, data- and pipeline-parallel parts
    (tp and dp of the slowest stage for each)."""

    total: float
    tp: float
    dp: float
    pp: float


def ring_link(topology: Topology, ranks: Sequence[int]) -> LinkCost:
    """The slowest α and β among the hops of a ring over ``ranks``."""
    return topology.slowest_link(ranks) or LinkCost(0.0, 0.0)


def score_placement(topology: Topology, grid: Sequence, sizes: CommSizes, layers: Sequence[int]) -> GroupCost:
    """The :class:`GroupCost` of ``grid`` (see the module docstring)."""
    tp_times, dp_times = [], []
    for s, stage in enumerate(grid):
        tp_times.append(max(layers[s] * predict_ring("allreduce", "ring", sizes.tp_bytes, len(group),
                                                     ring_link(topology, group)) for group in stage))
        dp_groups = [[row[t] for row in stage] for t in range(len(stage[0]))]
        dp_times.append(max(predict_ring("allreduce", "ring", layers[s] * sizes.dp_bytes, len(group),
                                         ring_link(topology, group)) for group in dp_groups))
    pp = sum(max(topology.link_cost(a, b).time(sizes.pp_bytes)
                 for row_a, row_b in zip(grid[s], grid[s + 1]) for a, b in zip(row_a, row_b))
             for s in range(len(grid) - 1))
    slowest = max(t + d for t, d in zip(tp_times, dp_times))
    return GroupCost(slowest + pp, max(tp_times), max(dp_times), pp)
