"""The dp × sp layout: NIC-aware process groups (sp as the bandwidth-heavy axis, kept inside a
node class), and which rows of the global batch and which tokens of each sequence a rank holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hpcrt
from hpcrt.collectives import make_groups

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
    rows: tuple[int, int]
    """This rank's sequences of the global batch (its dp group's)."""
    tokens: tuple[int, int]
    """This rank's contiguous chunk of each sequence."""
    table: list[dict]
    """Per rank: node, NIC class, dp and sp index."""

    @property
    def sp_comm(self) -> Any:
        """The ranks holding the other chunks of this rank's sequences, in chunk order."""
        return self.groups.tp

    def free(self) -> None:
        """Release the group communicators (collective)."""
        self.groups.free()


def make_layout(runtime: hpcrt.Runtime, parallel: Parallel, batch: int, seq_len: int) -> Layout:
    """Plan and split the groups on the runtime's topology (collective)."""
    groups = make_groups(dp=parallel.dp, pp=1, tp=parallel.sp)
    table = []
    for rank in range(runtime.size):
        _, dp_index, sp_index = groups.plan.coords(rank)
        info = runtime.topology.ranks[rank]
        table.append({"rank": rank, "node": info.node, "nic": info.nic_class, "dp": dp_index, "sp": sp_index})
    mine = table[runtime.rank]
    return Layout(groups, split(batch, parallel.dp)[mine["dp"]], split(seq_len, parallel.sp)[mine["sp"]], table)


def format_table(table: list[dict]) -> str:
    """The layout as a fixed-width table, one line per rank."""
    lines = [f"{'rank':>4}  {'node':<12} {'nic':<5} {'dp':>3} {'sp':>3}"]
    lines += [f"{r['rank']:>4}  {r['node']:<12} {r['nic']:<5} {r['dp']:>3} {r['sp']:>3}" for r in table]
    return "\n".join(lines)
