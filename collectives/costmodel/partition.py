"""Bytes and α-β(-γ) time of one ZeRO step over a :class:`PartitionPlan`, without running it.

A ZeRO step is the gradient reduce-scatter (stages 0 → k−1), the forward parameter all-gather
from the primary shards (stages k−1 → 0) and the backward all-gather: from the primary again
for one level (flat ZeRO-3), from the secondary shard (stages k−2 → 0, inside the node) with two
or more (hpZ, 3-level). Each stage is a one-way ring over each peer group; at ring step t the
peer at position i sends block i−t−1 (reduce-scatter) or i−t (all-gather) to position i+1, so
over a stage it sends its chunk minus its own block (reduce-scatter) or minus its successor's
block (all-gather).

Inter-node bytes per step, n elements of b bytes divisible by p, p = N·g ranks on N nodes of g:

* flat (one ring over all p ranks in rank order, c of its p hops crossing nodes):
  3·c·(p−1)/p·n·b, i.e. 3·(p−1)/g·n·b for node-by-node placement (c = N) and 3·(p−1)·n·b for
  round-robin placement (c = p);
* hpZ and 3-level (whose outermost stage is a ring of the N peers with one local index):
  2·(N−1)·n·b — the reduce-scatter and the forward all-gather each send (N−1)·n/p·b per rank,
  the backward all-gather none.

The 3-level scheme sends the same inter-node bytes as hpZ; it gains inside the node. Per phase, a
node of g ranks in P ≥ 2 pairs sends P·(g−1)/g·n·b over links that leave a pair with hpZ (its
ring over the node in rank order has P such hops) and (P−1)·n·b with the 3-level scheme; in time,
hpZ's ring takes g−1 steps of n/g paced by the pair-leaving link, the 3-level scheme one step of
n/2 inside the pair and P−1 steps of n/g between pairs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

from hpcrt.topology.table import LinkCost, Topology

from hpcrt.collectives.partition.plan import PartitionPlan

LinkCostOf = Callable[[int, int], LinkCost]
"""The α-β cost of the link between two world ranks."""


def step_phases(plan: PartitionPlan) -> list[tuple[str, bool, list[int]]]:
    """``(phase, is_gather, stages in order)`` of one ZeRO step (see the module docstring)."""
    k = plan.depth
    backward = list(range(k - 2, -1, -1)) if k > 1 else [0]
    return [("reduce_scatter", False, list(range(k))),
            ("allgather_forward", True, list(range(k - 1, -1, -1))),
            ("allgather_backward", True, backward)]


def _ring_sends(plan: PartitionPlan, stage: int, gather: bool) -> list[tuple]:
    """Per peer group of ``stage``, per ring step, ``(src, dst, elements)`` of every send."""
    rounds = []
    for group in plan.stages[stage]:
        m = len(group)
        blocks = [b - a for a, b in plan.blocks(group[0], stage)]
        steps = []
        for t in range(m - 1):
            steps.append([(group[i], group[(i + 1) % m], blocks[(i - t - (0 if gather else 1)) % m])
                          for i in range(m)])
        rounds.append(steps)
    return rounds


def stage_link_bytes(plan: PartitionPlan, stage: int, gather: bool, itemsize: int) -> Counter:
    """Bytes per (src, dst) world-rank pair that one stage's rings send."""
    sent: Counter = Counter()
    for steps in _ring_sends(plan, stage, gather):
        for step in steps:
            for src, dst, elements in step:
                if elements:
                    sent[plan.members[src], plan.members[dst]] += elements * itemsize
    return sent


def step_link_bytes(plan: PartitionPlan, itemsize: int) -> Counter:
    """Bytes per (src, dst) world-rank pair of one ZeRO step."""
    sent: Counter = Counter()
    for _, gather, stages in step_phases(plan):
        for stage in stages:
            sent.update(stage_link_bytes(plan, stage, gather, itemsize))
    return sent


def inter_node_bytes(link_bytes: dict, topology: Topology) -> int:
    """The bytes of ``link_bytes`` on links whose ends are on different nodes."""
    return sum(n for (src, dst), n in link_bytes.items() if topology.node_of(src) != topology.node_of(dst))


@dataclass(frozen=True)
class StepPrediction:
    """Predicted seconds of one ZeRO step, in total and per phase."""

    seconds: float
    phases: dict


def predict_step(plan: PartitionPlan, itemsize: int, link_cost: LinkCostOf, gamma: float = 0.0) -> StepPrediction:
    """α-β(-γ) time of one ZeRO step: per ring step, the slowest send of any peer group (its
    link's α + bytes·β, plus bytes·γ to fold it in during a reduce-scatter); stages and phases
    run one after another, peer groups of one stage at the same time."""
    phases = {}
    for phase, gather, stages in step_phases(plan):
        total = 0.0
        for stage in stages:
            ring_steps = _ring_sends(plan, stage, gather)
            for t in range(max((len(s) for s in ring_steps), default=0)):
                sends = [(src, dst, e) for steps in ring_steps for src, dst, e in steps[t] if e]
                total += max((link_cost(plan.members[src], plan.members[dst]).time(e * itemsize)
                              + (0.0 if gather else e * itemsize * gamma) for src, dst, e in sends), default=0.0)
        phases[phase] = total
    return StepPrediction(sum(phases.values()), phases)
