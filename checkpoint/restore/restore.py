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

import logging
from typing import Optional

import numpy as np

from hpcrt.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from hpcrt.checkpoint.files.levels import DISK_LEVELS, Places
from hpcrt.checkpoint.format import manifest
from hpcrt.checkpoint.format.hdf5 import check_rank_file, open_image, read_verified
from hpcrt.checkpoint.restore.assemble import assemble
from hpcrt.checkpoint.restore.plan import all_owners, choose_loader, files_needed, plain_source, plan_boxes
from hpcrt.checkpoint.save.collective import Collectives
from hpcrt.core.tags import CHECKPOINT_RESTORE

log = logging.getLogger("hpcrt.checkpoint")


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


def _try_step(coll: Collectives, places: Places, nodes: list, step: int, manifests: dict,
              requests: list) -> tuple:
    """``(flat state, {old rank: level})`` or ``(None, why)``, identical on every rank. Each file
    is read whole by one loader, which checks its size and checksum, and then the file against
    the manifest (step, world size, rank, every array's dtype, shape and offsets): a file that
    contradicts its manifest is as bad as a corrupt one."""
    layouts = manifest.layouts_of(next(iter(manifests.values())))
    plans = plan_boxes(layouts, coll.size, requests)
    owners = all_owners(layouts)
    needs = files_needed(layouts, plans, owners)
    needers = {r: [j for j in range(coll.size) if r in needs[j]] for r in set().union(*needs)}
    images, resolved, problems = {}, {}, []
    for level in (lv for lv in DISK_LEVELS if lv in manifests):
        records = {f["rank"]: f for f in manifests[level]["files"] if f["rank"] is not None}
        mine_ok, mine_bad = [], []
        for old in sorted(set(needers) - set(resolved)):
            record = records.get(old)
            loader = None if record is None else choose_loader(level, record, needers[old], nodes, old)
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
        flat, error = assemble(layouts, plans[coll.rank], plain_source(coll.rank, len(layouts)), images,
                               owners), None
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
