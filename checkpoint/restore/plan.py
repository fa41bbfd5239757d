"""Restore planning, the same on every rank from allgathered facts: which box of each sharded
array every current rank gets, where its plain values come from, which old files it needs, and
which rank reads each file."""

from __future__ import annotations

from typing import Optional

from hpcrt.checkpoint.errors import CheckpointError


def plain_source(rank: int, old_size: int) -> int:
    """The old rank whose plain arrays and JSON values current ``rank`` gets back."""
    return rank % old_size


def plan_boxes(layouts: list, new_size: int, requests: list) -> list:
    """Per current rank, ``{key: (offset, shape)}`` of each sharded key it will get."""
    shard_entries = [e for e in layouts[0] if e.global_shape is not None]
    keyed = [{e.key: e for e in entries} for entries in layouts] if new_size == len(layouts) else []
    plans = []
    for rank in range(new_size):
        request, plan = requests[rank], {}
        for entry in shard_entries:
            if entry.key in request:
                offset, shape = (tuple(int(n) for n in v) for v in request[entry.key])
            elif new_size == len(layouts):
                mine = keyed[rank][entry.key]
                offset, shape = mine.offset, mine.shape
            else:
                offset, shape = even_split(entry.global_shape, rank, new_size)
            if len(offset) != len(entry.global_shape) or len(shape) != len(offset) or any(
                    o < 0 or n < 0 or o + n > g for o, n, g in zip(offset, shape, entry.global_shape)):
                raise CheckpointError(f"restore: rank {rank} asked for offset {offset} shape {shape} of key "
                                      f"{entry.key!r}, which does not fit its global shape {entry.global_shape}")
            plan[entry.key] = (offset, shape)
        unknown = set(request) - {e.key for e in shard_entries}
        if unknown:
            raise CheckpointError(f"restore: rank {rank} asked for shards of {sorted(unknown)}, which are not "
                                  f"sharded keys of the checkpoint")
        plans.append(plan)
    return plans


def even_split(global_shape: tuple, rank: int, size: int) -> tuple:
    """Rank ``rank``'s block of an even split along axis 0 (the first ``n % size`` ranks get one more row)."""
    rows, extra = divmod(global_shape[0], size)
    start = rank * rows + min(rank, extra)
    return (start,) + (0,) * (len(global_shape) - 1), (rows + (rank < extra),) + tuple(global_shape[1:])


def all_owners(layouts: list) -> dict:
    """Per sharded key, (old rank, entry) per distinct non-empty box (the lowest rank of each replica set)."""
    keyed = [{e.key: e for e in entries} for entries in layouts]
    owners = {}
    for first in layouts[0]:
        if first.global_shape is None:
            continue
        seen, owners[first.key] = set(), []
        for rank, entries in enumerate(keyed):
            entry = entries[first.key]
            if 0 not in entry.shape and (entry.offset, entry.shape) not in seen:
                seen.add((entry.offset, entry.shape))
                owners[first.key].append((rank, entry))
    return owners


def intersection(offset_a: tuple, shape_a: tuple, offset_b: tuple, shape_b: tuple) -> Optional[tuple]:
    """``(lo, hi)`` corners of two boxes' overlap, or None."""
    lo = tuple(max(a, b) for a, b in zip(offset_a, offset_b))
    hi = tuple(min(a + m, b + n) for a, m, b, n in zip(offset_a, shape_a, offset_b, shape_b))
    return None if any(h <= low for low, h in zip(lo, hi)) else (lo, hi)


def files_needed(layouts: list, plans: list, owners: dict) -> list:
    """Per current rank, the old ranks whose files it needs: its plain source and every shard overlapping its boxes."""
    old_size = len(layouts)
    needs = []
    for rank, plan in enumerate(plans):
        need = {plain_source(rank, old_size)}
        for key, (offset, shape) in plan.items():
            need.update(r for r, e in owners[key] if intersection(offset, shape, e.offset, e.shape))
        needs.append(need)
    return needs


def choose_loader(level: str, record: dict, needers: list, nodes: list, old_rank: int) -> Optional[int]:
    """The rank that reads an old rank's file at ``level``: one that can see it, preferably one that needs it."""
    if level == "global":
        return needers[0]
    on_node = [r for r, n in enumerate(nodes) if n == record["node"]]
    candidates = [r for r in on_node if r in needers] or on_node
    return candidates[old_rank % len(candidates)] if candidates else None
