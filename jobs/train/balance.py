"""Speed-weighted shards: per-rank weights turned into whole sequences per dp group and whole
tokens per rank, and the online rebalance that moves weights towards measured compute speed with
hysteresis (no change below a threshold, a bounded factor per change)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

COMPUTE_SECTIONS = ("forward", "scan", "backward")
"""The sections whose self-time (the monitor's: collectives inside left out) is the rank's own
compute; the scan's is the GLA recurrence on its chunk, its All-Scan waiting left out."""
COMPUTE = "compute"
"""The monitor section around all of a step's forward and backward: its self-time is the step's
compute sections together, so its window median is the rank's median compute per step."""


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` whole items shared in proportion to ``weights``, each part at least 1: the floors
    of the ideal shares, then the largest remainders (ties to the lower index)."""
    parts = len(weights)
    if total < parts:
        raise ValueError(f"cannot give {parts} parts at least one of {total} items")
    scale = sum(weights)
    ideal = [total * w / scale for w in weights]
    counts = [max(1, int(x)) for x in ideal]
    while sum(counts) > total:
        shrink = max((i for i in range(parts) if counts[i] > 1), key=lambda i: (counts[i] - ideal[i], -i))
        counts[shrink] -= 1
    while sum(counts) < total:
        counts[max(range(parts), key=lambda i: (ideal[i] - counts[i], -i))] += 1
    return counts


def bounds(counts: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges of the given lengths."""
    out, start = [], 0
    for count in counts:
        out.append((start, start + count))
        start += count
    return out


@dataclass(frozen=True)
class Shards:
    """Per rank: its [start, stop) sequences of the global batch and tokens of each sequence."""

    rows: tuple
    tokens: tuple

    def work(self) -> list[int]:
        """Tokens each rank computes per step."""
        return [(r[1] - r[0]) * (t[1] - t[0]) for r, t in zip(self.rows, self.tokens)]

    def per_rank(self) -> list[list[int]]:
        """[sequences, tokens per sequence] of every rank (what metrics.jsonl records)."""
        return [[r[1] - r[0], t[1] - t[0]] for r, t in zip(self.rows, self.tokens)]


def shard(weights: Sequence[float], table: Sequence[dict], batch: int, seq_len: int) -> Shards:
    """Each dp group's sequences in proportion to the sum of its ranks' weights (what the group
    processes per second once its tokens are balanced), each rank's tokens in proportion to its
    weight within its group."""
    groups = sorted({row["dp"] for row in table})
    members = {g: sorted((row for row in table if row["dp"] == g), key=lambda row: row["sp"]) for g in groups}
    rows_of = dict(zip(groups, bounds(apportion(batch, [sum(weights[m["rank"]] for m in members[g])
                                                        for g in groups]))))
    tokens_of = {}
    for g in groups:
        spans = bounds(apportion(seq_len, [weights[m["rank"]] for m in members[g]]))
        tokens_of.update({m["rank"]: span for m, span in zip(members[g], spans)})
    ranks = range(len(table))
    return Shards(tuple(rows_of[table[r]["dp"]] for r in ranks), tuple(tokens_of[r] for r in ranks))


def normalized(weights: Sequence[float]) -> list[float]:
    """Weights summing to 1."""
    total = sum(weights)
    return [w / total for w in weights]


@dataclass(frozen=True)
class Rebalancer:
    """Moves weights towards measured speed: ``threshold`` is the smallest relative change of any
    rank's weight worth making, ``max_factor`` the most one change may scale a weight by (all
    weights move the same fraction of the way to their targets, so they still sum to 1)."""

    threshold: float
    max_factor: float

    def propose(self, shards: Shards, compute_s: Sequence[float]) -> Optional[list[float]]:
        """New weights (summing to 1) from each rank's compute seconds for its current shard, moved
        from the shares actually in force (so rounding never lets weights drift), or None when every
        rank's target is within the threshold of its share."""
        work = shards.work()
        current = normalized(work)
        target = normalized([w / max(c, 1e-12) for w, c in zip(work, compute_s)])
        if max(abs(t / w - 1.0) for t, w in zip(target, current)) < self.threshold:
            return None
        step = min([1.0] + [self._room(w, t) / abs(t - w) for t, w in zip(target, current) if t != w])
        return normalized([w + step * (t - w) for t, w in zip(target, current)])

    def _room(self, weight: float, target: float) -> float:
        """How far ``weight`` may move towards ``target`` in one change (at most ``max_factor``)."""
        return weight * (self.max_factor - 1.0 if target > weight else 1.0 - 1.0 / self.max_factor)


def compute_seconds(window: dict) -> list[float]:
    """Each rank's median compute time per step in a monitor straggler window (the self-time of
    its ``compute`` section: forward, scan and backward, collectives excluded)."""
    return [entry["sections"][COMPUTE]["median_ms"] / 1e3 for entry in window["ranks"]]


def initial_weights(balance: str, weights: Optional[Sequence[float]], gpu_weight: float,
                    devices: Sequence[str]) -> list[float]:
    """The weights a run starts from: the configured ones, else with ``static`` ``gpu_weight`` for
    each GPU rank and 1 for each CPU rank, else equal."""
    if weights is not None:
        return list(weights)
    if balance == "static":
        return [gpu_weight if kind == "gpu" else 1.0 for kind in devices]
    return [1.0] * len(devices)
