"""The dp × sp layout: NIC-aware process groups (sp as the bandwidth-heavy axis, kept inside a
node class), and which rows of the global batch and which tokens of each sequence a rank holds
(shares in proportion to per-rank weights, changed between steps by a rebalance)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import hpcrt
from hpcrt.collectives import make_groups

from hpcrt.jobs.train.balance import Shards, shard
from hpcrt.jobs.train.config import Parallel


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """``total`` items in ``parts`` contiguous [start, stop) ranges, the first ``total % parts`` one longer."""
    base, extra = divmod(total, parts)
    bounds, start = [], 0
    for part in range(parts):
        stop = start + base + (part < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


@dataclass
class Layout:
    """This rank's place: its groups (the sp communicator joins a sequence's chunks) and its slice
    of the batch."""

    groups: Any
    rank: int
    rows: tuple[int, int]
    """This rank's sequences of the global batch (its dp group's)."""
    tokens: tuple[int, int]
    """This rank's contiguous chunk of each sequence."""
    table: list[dict]
    """Per rank: node, NIC class, device kind, dp and sp index."""
    shards: Shards
    """Every rank's rows and tokens (``rows`` and ``tokens`` are this rank's)."""
    weights: list
    """The per-rank weights the shards were cut by."""

    def reshard(self, weights: Sequence[float], batch: int, seq_len: int) -> None:
        """Cut the batch again by ``weights`` (the same on every rank), from the next step on."""
        self.weights = list(weights)
        self.shards = shard(self.weights, self.table, batch, seq_len)
        self.rows, self.tokens = self.shards.rows[self.rank], self.shards.tokens[self.rank]

    @property
    def sp_comm(self) -> Any:
        """The ranks holding the other chunks of this rank's sequences, in chunk order."""
        return self.groups.tp

    def free(self) -> None:
        """Release the group communicators (collective)."""
        self.groups.free()


def make_layout(runtime: hpcrt.Runtime, parallel: Parallel, batch: int, seq_len: int,
                weights: Sequence[float]) -> Layout:
    """Plan and split the groups on the runtime's topology (collective); shares by ``weights``."""
    groups = make_groups(dp=parallel.dp, pp=1, tp=parallel.sp)
    table = []
    for rank in range(runtime.size):
        _, dp_index, sp_index = groups.plan.coords(rank)
        info = runtime.topology.ranks[rank]
        table.append({"rank": rank, "node": info.node, "nic": info.nic_class, "device": info.device.kind,
                      "dp": dp_index, "sp": sp_index})
    layout = Layout(groups, runtime.rank, (0, 0), (0, 0), table, Shards((), ()), [])
    layout.reshard(weights, batch, seq_len)
    return layout


def format_table(table: list[dict]) -> str:
    """The layout as a fixed-width table, one line per rank."""
    lines = [f"{'rank':>4}  {'node':<12} {'nic':<5} {'device':<6} {'dp':>3} {'sp':>3}"]
    lines += [f"{r['rank']:>4}  {r['node']:<12} {r['nic']:<5} {r['device']:<6} {r['dp']:>3} {r['sp']:>3}"
              for r in table]
    return "\n".join(lines)
