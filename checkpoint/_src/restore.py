"""Collective restore: the newest step every rank can read and verify, each old rank's file taken
from the fastest level that has a good copy, resharded onto the current ranks.

Every decision is made from allgathered facts, so all ranks agree without extra votes:

1. rank 0 reads the manifests (one bcast); steps are tried newest first.
2. each current rank works out the boxes it wants (same rank count: the saved layout; otherwise
   an even split along axis 0, or what ``shards=`` asks) and so the old rank files it needs.
3. for each level in order local → partner → global, every still-missing file gets a *loader*: a
   rank that can see the copy (on the copy's node for node-local levels, preferably a rank that
   needs it) reads it whole and checks size and xxh3-128; outcomes are allgathered.
4. loaders send verified file images to the other ranks that need them; each rank opens the
   images in memory (never re-reading the disk): whole datasets come back as views of an image,
   resharded boxes are copied out of them.
"""

from __future__ import annotations

import collections
import json
from typing import Any, Optional

import numpy as np

from . import manifest
from .errors import CheckpointError, CheckpointNotFoundError, NotACheckpointDirectoryError
from .format import JSON_ATTR, dataset_view, open_image, read_verified
from .levels import DISK_LEVELS, Places
from .state import Shard

TAG = 0x4B7
VIEW_SHARE = 0.5
"""Whole datasets come back as views of their file image only when this rank takes at least this
share of the image's bytes as such; below it they are copied, so that the image can be freed."""


def restore(comm: Any, places: Places, nodes: list, step: Optional[int],
            shards: Optional[dict]) -> tuple[int, dict, dict]:
    """Collective over ``comm``: ``(step, flat state, {old rank: level its file came from})``;
    raises the same error on every rank."""
    catalog, error, unreadable = None, None, []
    if comm.rank == 0:
        try:
            manifest.open_directory(places)
            catalog = {}
            for s, levels in manifest.committed(places).items():
                for level in levels:
                    try:
                        catalog.setdefault(s, {})[level] = manifest.read(places, s, level)
                    except NotACheckpointDirectoryError as exc:  # a damaged manifest: that copy is gone
                        unreadable.append(f"step {s}: {exc}")
        except (CheckpointError, OSError) as exc:
            error = exc
    catalog, error, unreadable = comm.bcast((catalog, error, unreadable))
    if error is not None:
        raise error
    if step is not None and step not in catalog:
        raise CheckpointNotFoundError(f"{places.directory}: step {step} has no committed checkpoint "
                                      f"(committed: {sorted(catalog) or 'none'})")
    requests = comm.allgather(shards or {})
    failures = list(unreadable)
    for candidate in [step] if step is not None else sorted(catalog, reverse=True):
        flat, why = _try_step(comm, places, nodes, catalog[candidate], requests)
        if flat is not None:
            return candidate, flat, why
        failures.append(f"step {candidate}: {why}")
    raise CheckpointNotFoundError(f"{places.directory}: no checkpoint that every rank can read and verify"
                                  + (" — " + "; ".join(failures) if failures else " (none committed)"))


def plan_boxes(layouts: list, new_size: int, requests: list) -> list:
    """Per current rank, ``{key: (offset, shape)}`` of each sharded key it will get."""
    shard_entries = [e for e in layouts[0] if e.global_shape is not None]
    plans = []
    for rank in range(new_size):
        request, plan = requests[rank], {}
        for entry in shard_entries:
            if entry.key in request:
                offset, shape = (tuple(int(n) for n in v) for v in request[entry.key])
            elif new_size == len(layouts):
                mine = next(e for e in layouts[rank] if e.key == entry.key)
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


def _owners(layouts: list, key: str) -> list:
    """(old rank, entry) per distinct non-empty box of ``key`` (the lowest rank of each replica set)."""
    seen, owners = set(), []
    for rank, entries in enumerate(layouts):
        entry = next(e for e in entries if e.key == key)
        if 0 not in entry.shape and (entry.offset, entry.shape) not in seen:
            seen.add((entry.offset, entry.shape))
            owners.append((rank, entry))
    return owners


def _intersection(offset_a: tuple, shape_a: tuple, offset_b: tuple, shape_b: tuple) -> Optional[tuple]:
    lo = tuple(max(a, b) for a, b in zip(offset_a, offset_b))
    hi = tuple(min(a + m, b + n) for a, m, b, n in zip(offset_a, shape_a, offset_b, shape_b))
    return None if any(h <= low for low, h in zip(lo, hi)) else (lo, hi)


def _needs(layouts: list, plans: list) -> list:
    old_size = len(layouts)
    owners = {e.key: _owners(layouts, e.key) for e in layouts[0] if e.global_shape is not None}
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


def _try_step(comm: Any, places: Places, nodes: list, manifests: dict, requests: list) -> tuple:
    """``(flat state, {old rank: level})`` or ``(None, why)``, identical on every rank."""
    layouts = manifest.layouts_of(next(iter(manifests.values())))
    plans = plan_boxes(layouts, comm.size, requests)
    needs = _needs(layouts, plans)
    needers = {r: [j for j in range(comm.size) if r in needs[j]] for r in set().union(*needs)}
    images, resolved, problems = {}, {}, []
    for level in (lv for lv in DISK_LEVELS if lv in manifests):
        records = {f["rank"]: f for f in manifests[level]["files"] if f["rank"] is not None}
        mine_ok, mine_bad = [], []
        for old in sorted(set(needers) - set(resolved)):
            record = records.get(old)
            loader = None if record is None else _loader(level, record, needers[old], nodes, old)
            if loader == comm.rank:
                try:
                    images[old] = read_verified(places.resolve(level, record["node"], record["path"]),
                                                record["size"], record["xxh3_128"])
                    mine_ok.append(old)
                except (OSError, ValueError) as exc:
                    mine_bad.append(f"{level} copy of rank {old}'s file: {exc}")
        for rank, (good, bad) in enumerate(comm.allgather((mine_ok, mine_bad))):
            resolved.update({old: (rank, records[old]["size"], level) for old in good})
            problems.extend(bad)
    missing = sorted(set(needers) - set(resolved))
    if missing:
        return None, (f"no good copy of the files of old ranks {missing}"
                      + (" (" + "; ".join(problems) + ")" if problems else ""))
    _distribute(comm, needers, resolved, images)
    try:
        flat, error = _assemble(layouts, plans[comm.rank], comm.rank % len(layouts), images), None
    except Exception as exc:  # a verified image that h5py cannot read: try an older step everywhere
        flat, error = None, f"rank {comm.rank}: {type(exc).__name__}: {exc}"
    errors = [e for e in comm.allgather(error) if e]
    return (flat, {old: level for old, (_, _, level) in resolved.items()}) if not errors else \
        (None, "; ".join(errors))


def _distribute(comm: Any, needers: dict, resolved: dict, images: dict) -> None:
    """Loaders send each verified file image to the other ranks that need it."""
    requests = []
    for old in sorted(needers):
        loader, size, _ = resolved[old]
        for rank in needers[old]:
            if rank == loader:
                continue
            if comm.rank == loader:
                requests.append(comm.Isend(images[old], dest=rank, tag=TAG))
            elif comm.rank == rank:
                images[old] = np.empty(size, dtype=np.uint8)
                requests.append(comm.Irecv(images[old], source=loader, tag=TAG))
    if requests:
        requests[0].Waitall(requests)
    for old in [o for o in images if comm.rank not in needers[o]]:
        del images[old]


def _assemble(layouts: list, plan: dict, source: int, images: dict) -> dict:
    """This rank's flat state: JSON values and plain arrays of old rank ``source``, shards sliced
    out of every old file that overlaps the planned boxes. A whole dataset comes back as a view of
    its verified image when this rank takes at least ``VIEW_SHARE`` of that image's bytes so (a
    small array must not keep a large image alive), else as a copy; other boxes are assembled."""
    files = {old: open_image(data) for old, data in images.items()}
    try:
        flat: dict = json.loads(files[source].attrs[JSON_ATTR])
        whole, boxes = {}, []
        for entry in layouts[source]:
            if entry.global_shape is None:
                whole[entry.key] = (source, entry)
                continue
            box = plan[entry.key]
            exact = [(old, owned) for old, owned in _owners(layouts, entry.key) if (owned.offset, owned.shape) == box]
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
                array = _read(files[old], images[old], owned, taken[old] >= VIEW_SHARE * images[old].nbytes)
                flat[entry.key] = array if entry.global_shape is None else \
                    Shard(array, entry.global_shape, plan[entry.key][0])
        for entry in boxes:
            offset, shape = plan[entry.key]
            out = np.empty(shape, dtype=entry.dtype)
            for old, owned in _owners(layouts, entry.key):
                box = _intersection(offset, shape, owned.offset, owned.shape)
                if box is not None:
                    lo, hi = box
                    source_box = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, owned.offset))
                    target_box = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, offset))
                    part = dataset_view(files[old], images[old], entry.key)
                    if part is not None:
                        out[target_box] = part[source_box]
                    else:
                        files[old][entry.key].read_direct(out, source_box, target_box)
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
