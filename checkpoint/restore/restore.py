"""Collective restore: the newest step every rank can read and verify, each old rank's file taken
from the fastest level that has a good copy, resharded onto the current ranks.

Every decision is made from allgathered facts, so all ranks agree without extra votes:

1. rank 0 reads the manifests, each checked field by field (a damaged one is skipped and named),
   and one bcast gives every rank the same candidates: steps newest first (or only the
   requested one), and within a step the levels each save wrote, the newer save first (a step
   saved again can have levels of two saves until the newer one reaches them all).
2. each current rank works out the boxes it wants (same rank count: the saved layout; otherwise
   an even split along axis 0, or what ``shards=`` asks) and so the old rank files it needs.
3. for each level in order local → partner → global, every still-missing file gets a *loader*: a
   rank that can see the copy (on the copy's node for node-local levels, preferably a rank that
   needs it) reads it whole (a regular file inside its root only), checks size and xxh3-128,
   then checks the file against the manifest (step, world size, rank, arrays, dtypes, shapes,
   offsets); outcomes are allgathered.
4. loaders send verified file images to the other ranks that need them; each rank opens the
   images in memory (never re-reading the disk): whole datasets come back as views of an image,
   resharded boxes are copied out of them.

A candidate that fails on any rank fails on every rank, and the next one is tried (rank 0 logs a
WARNING naming the step skipped and why).
"""

from __future__ import annotations

import collections
import json
import logging
import math
from typing import Any, Optional

import numpy as np

from hpcrt.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from hpcrt.checkpoint.files.levels import DISK_LEVELS, Places
from hpcrt.checkpoint.format import manifest
from hpcrt.checkpoint.format.entries import Shard
from hpcrt.checkpoint.format.hdf5 import (JSON_ATTR, check_rank_file, dataset_view, open_image, packed_base,
                                          read_verified)
from hpcrt.checkpoint.save.collective import Collectives
from hpcrt.core.tags import CHECKPOINT_RESTORE

log = logging.getLogger("hpcrt.checkpoint")
VIEW_SHARE = 0.5
"""Whole datasets come back as views of their file image only when this rank takes at least this
share of the image's bytes as such; below it they are copied, so that the image can be freed."""


def candidates(found: dict) -> list:
    """``[(step, {level: manifest})]`` to try, newest first: per step, the levels one save wrote
    (a step saved again may have levels from two saves until the newer one reaches them all),
    the newer save first."""
    out = []
    for step in sorted(found, reverse=True):
        saves: dict = {}
        for level in DISK_LEVELS:
            if level in found[step]:
                saves.setdefault(manifest.save_id(found[step][level]), {})[level] = found[step][level]
        out.extend((step, levels) for levels in sorted(
            saves.values(), key=lambda lv: max(d["created"] for d in lv.values()), reverse=True))
    return out


def read_catalog(coll: Collectives, places: Places) -> tuple:
    """Rank 0 reads and checks every manifest; one bcast gives every rank the same candidates,
    the same problems (damaged manifests, skipped) or the same error."""
    found, error, problems = None, None, []
    if coll.rank == 0:
        try:
            docs, problems = manifest.catalog(places)
            found = candidates(docs)
        except CheckpointError as exc:
            error = exc
        except Exception as exc:  # whatever rank 0 trips on, every rank learns it here
            error = CheckpointError(f"checkpoint directory {places.directory}: {type(exc).__name__}: {exc}")
    found, error, problems = coll.bcast((found, error, problems), "ckpt_restore_catalog")
    if error is not None:
        raise error
    if coll.rank == 0:
        for problem in problems:
            log.warning("checkpoint restore: skipping a damaged manifest: %s", problem)
    return found, problems


def restore(coll: Collectives, places: Places, nodes: list, step: Optional[int],
            shards: Optional[dict]) -> tuple[int, dict, dict]:
    """Collective: ``(step, flat state, {old rank: level its file came from})``; raises the same
    error on every rank. Every step skipped on the way is logged (rank 0) as a WARNING saying why."""
    found, problems = read_catalog(coll, places)
    steps = sorted({s for s, _ in found})
    if step is not None and step not in steps:
        raise CheckpointNotFoundError(f"{places.directory}: step {step} has no committed checkpoint "
                                      f"(committed: {steps or 'none'})"
                                      + (" — " + "; ".join(problems) if problems else ""))
    requests = coll.allgather(shards or {}, "ckpt_restore_requests")
    failures = list(problems)
    todo = [(s, levels) for s, levels in found if step is None or s == step]
    for i, (candidate, levels) in enumerate(todo):
        flat, why = _try_step(coll, places, nodes, candidate, levels, requests)
        if flat is not None:
            return candidate, flat, why
        failures.append(f"step {candidate} ({', '.join(levels)}): {why}")
        if coll.rank == 0 and i + 1 < len(todo):
            log.warning("checkpoint restore: skipping step %d (levels %s): %s; trying step %d", candidate,
                        ", ".join(levels), why, todo[i + 1][0])
    raise CheckpointNotFoundError(f"{places.directory}: no checkpoint that every rank can read and verify"
                                  + (" — " + "; ".join(failures) if failures else " (none committed)"))


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


def _intersection(offset_a: tuple, shape_a: tuple, offset_b: tuple, shape_b: tuple) -> Optional[tuple]:
    lo = tuple(max(a, b) for a, b in zip(offset_a, offset_b))
    hi = tuple(min(a + m, b + n) for a, m, b, n in zip(offset_a, shape_a, offset_b, shape_b))
    return None if any(h <= low for low, h in zip(lo, hi)) else (lo, hi)


def _needs(layouts: list, plans: list, owners: dict) -> list:
    old_size = len(layouts)
    needs = []
    for rank, plan in enumerate(plans):
        need = {rank % old_size}
        for key, (offset, shape) in plan.items():
            need.update(r for r, e in owners[key] if _intersection(offset, shape, e.offset, e.shape))
        needs.append(need)
    return needs


def _loader(level: str, record: dict, needers: list, nodes: list, old_rank: int) -> Optional[int]:
    if level == "global":
        return needers[0]
    on_node = [r for r, n in enumerate(nodes) if n == record["node"]]
    candidates = [r for r in on_node if r in needers] or on_node
    return candidates[old_rank % len(candidates)] if candidates else None


def _try_step(coll: Collectives, places: Places, nodes: list, step: int, manifests: dict,
              requests: list) -> tuple:
    """``(flat state, {old rank: level})`` or ``(None, why)``, identical on every rank. Each file
    is read whole by one loader, which checks its size and checksum, and then the file against
    the manifest (step, world size, rank, every array's dtype, shape and offsets): a file that
    contradicts its manifest is as bad as a corrupt one."""
    layouts = manifest.layouts_of(next(iter(manifests.values())))
    plans = plan_boxes(layouts, coll.size, requests)
    owners = all_owners(layouts)
    needs = _needs(layouts, plans, owners)
    needers = {r: [j for j in range(coll.size) if r in needs[j]] for r in set().union(*needs)}
    images, resolved, problems = {}, {}, []
    for level in (lv for lv in DISK_LEVELS if lv in manifests):
        records = {f["rank"]: f for f in manifests[level]["files"] if f["rank"] is not None}
        mine_ok, mine_bad = [], []
        for old in sorted(set(needers) - set(resolved)):
            record = records.get(old)
            loader = None if record is None else _loader(level, record, needers[old], nodes, old)
            if loader == coll.rank:
                try:
                    path = places.confined(level, record["node"], record["path"])
                    image = read_verified(path, record["size"], record["xxh3_128"])
                    with open_image(image) as f:
                        check_rank_file(f, layouts[old], step, len(layouts), old)
                    images[old] = image
                    mine_ok.append(old)
                except Exception as exc:  # unreadable, corrupt, or contradicting the manifest
                    mine_bad.append(f"{level} copy of rank {old}'s file: {exc}")
        for rank, (good, bad) in enumerate(coll.allgather((mine_ok, mine_bad), "ckpt_restore_vote")):
            resolved.update({old: (rank, records[old]["size"], level) for old in good})
            problems.extend(bad)
    missing = sorted(set(needers) - set(resolved))
    if missing:
        return None, (f"no good copy of the files of old ranks {missing}"
                      + (" (" + "; ".join(problems) + ")" if problems else ""))
    _distribute(coll, needers, resolved, images)
    try:
        flat, error = _assemble(layouts, plans[coll.rank], coll.rank % len(layouts), images, owners), None
    except Exception as exc:  # a verified image that h5py cannot read: try an older step everywhere
        flat, error = None, f"rank {coll.rank}: {type(exc).__name__}: {exc}"
    errors = [e for e in coll.allgather(error, "ckpt_restore_done") if e]
    return (flat, {old: level for old, (_, _, level) in resolved.items()}) if not errors else \
        (None, "; ".join(errors))


def _distribute(coll: Collectives, needers: dict, resolved: dict, images: dict) -> None:
    """Loaders send each verified file image to the other ranks that need it."""
    comm, requests, nbytes = coll.comm, [], 0
    for old in sorted(needers):
        loader, size, _ = resolved[old]
        for rank in needers[old]:
            if rank == loader:
                continue
            if comm.rank == loader:
                requests.append(comm.Isend(images[old], dest=rank, tag=CHECKPOINT_RESTORE))
                nbytes += size
            elif comm.rank == rank:
                images[old] = np.empty(size, dtype=np.uint8)
                requests.append(comm.Irecv(images[old], source=loader, tag=CHECKPOINT_RESTORE))
    coll.traced_wait(requests, "ckpt_restore_files", nbytes, keep=dict(images))
    for old in [o for o in images if comm.rank not in needers[o]]:
        del images[old]


def _assemble(layouts: list, plan: dict, source: int, images: dict, owners: Optional[dict] = None) -> dict:
    """This rank's flat state: JSON values and plain arrays of old rank ``source``, shards sliced
    out of every old file that overlaps the planned boxes. A whole dataset (or packed array) comes
    back as a view of its verified image when this rank takes at least ``VIEW_SHARE`` of that
    image's bytes so (a small array must not keep a large image alive), else as a copy; other
    boxes are assembled, and must be covered whole by the saved shards."""
    owners = all_owners(layouts) if owners is None else owners
    files = {old: open_image(data) for old, data in images.items()}
    try:
        packs = {old: packed_base(f) for old, f in files.items()}
        flat: dict = json.loads(files[source].attrs[JSON_ATTR])
        whole, boxes = {}, []
        for entry in layouts[source]:
            if entry.global_shape is None:
                whole[entry.key] = (source, entry)
                continue
            box = plan[entry.key]
            exact = [(old, owned) for old, owned in owners[entry.key] if (owned.offset, owned.shape) == box]
            if exact:
                whole[entry.key] = exact[0]
            else:
                boxes.append(entry)
        taken: dict = collections.Counter()
        for old, owned in whole.values():
            taken[old] += owned.nbytes
        for entry in layouts[source]:
            if entry.key in whole:
                old, owned = whole[entry.key]
                as_view = taken[old] >= VIEW_SHARE * images[old].nbytes
                if packs[old] is not None and owned.packed:
                    start = packs[old] + owned.buf_offset
                    array = images[old][start:start + owned.nbytes].view(owned.dtype).reshape(owned.shape)
                    array = array if as_view and array.flags.aligned else array.copy()
                else:
                    array = _read(files[old], images[old], owned, as_view)
                flat[entry.key] = array if entry.global_shape is None else \
                    Shard(array, entry.global_shape, plan[entry.key][0])
        for entry in boxes:
            offset, shape = plan[entry.key]
            out = np.empty(shape, dtype=entry.dtype)
            covered = 0
            for old, owned in owners[entry.key]:
                box = _intersection(offset, shape, owned.offset, owned.shape)
                if box is not None:
                    lo, hi = box
                    covered += math.prod(b - a for a, b in zip(lo, hi))
                    source_box = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, owned.offset))
                    target_box = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, offset))
                    part = dataset_view(files[old], images[old], entry.key)
                    if part is not None:
                        out[target_box] = part[source_box]
                    else:
                        files[old][entry.key].read_direct(out, source_box, target_box)
            if covered != out.size:
                raise ValueError(f"key {entry.key!r}: the saved shards cover {covered} of the {out.size} elements "
                                 f"asked for at offset {offset}")
            flat[entry.key] = Shard(out, entry.global_shape, offset)
        return flat
    finally:
        for f in files.values():
            f.close()


def _read(f: Any, image: np.ndarray, entry: Any, as_view: bool) -> np.ndarray:
    """A whole dataset: a view of the image (``as_view``, and aligned), a copy of it, or read by HDF5."""
    view = dataset_view(f, image, entry.key)
    if view is not None:
        return view if as_view and view.flags.aligned else view.copy()
    out = np.empty(entry.shape, dtype=entry.dtype)
    if out.size:
        f[entry.key].read_direct(out)
    return out
