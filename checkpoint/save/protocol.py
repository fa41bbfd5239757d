"""The save protocol, run by the flush thread for each save, the same collectives on every rank:

1. digest: one allgather of each rank's step, layout, JSON keys and snapshot status checks that
   ranks agree (step, keys, dtypes, global shapes, tiling) and gives rank 0 the manifest's layouts;
2. per level: write this rank's files (:mod:`.writing`; the partner level first exchanges the
   snapshots, :mod:`.partner`), vote (allgather), and rank 0 writes the manifest, the commit,
   and enters it in its ledger; one bcast tells every rank the outcome;
3. retention: the files of the steps the ledger drops (and of a step's replaced save) are retired
   by their holders, off the commit path.

A rank's failure is thus known to every rank; files no manifest vouches for are removed. A
committed step is never destroyed by a later save: a step saved again gets new file names, its
new manifest replaces the old one atomically, and only then are the old files retired."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Optional

from hpcrt.backends.staging import PinnedPool

from hpcrt.checkpoint.errors import CheckpointError, StateError
from hpcrt.checkpoint.files import retention
from hpcrt.checkpoint.files.commit import make_dirs_durable, remove_file
from hpcrt.checkpoint.files.levels import Places
from hpcrt.checkpoint.files.reaper import Reaper
from hpcrt.checkpoint.format import manifest
from hpcrt.checkpoint.format.entries import FlatState, _same_on_all, check_layouts
from hpcrt.checkpoint.restore.memory import MemoryLevel
from hpcrt.checkpoint.save import partner
from hpcrt.checkpoint.save.collective import Collectives, CollectiveTimeoutError
from hpcrt.checkpoint.save.snapshot import Snapshot
from hpcrt.checkpoint.save.writing import LevelWriter

log = logging.getLogger("hpcrt.checkpoint")


@dataclass
class SaveJob:
    """One save in flight."""

    index: int
    step: int
    flat: Optional[FlatState]
    levels: tuple
    folders: Future
    snapshot: Optional[Snapshot] = None
    error: Optional[str] = None
    traced: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    snapshotted: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Digest:
    """What every rank knows of a save once the digest is allgathered."""

    layouts: list
    texts: list
    sizes: list
    save_id: str
    tag: str


class SaveProtocol:
    """Runs saves for one Checkpointer; ``record(index, messages)`` keeps a save's failures for
    ``save()``/``wait()`` to raise, ``phase(name)`` is the fault-injection hook."""

    def __init__(self, coll: Collectives, places: Places, nodes: list, holders: Optional[list], pool: PinnedPool,
                 ledger: Optional[retention.Ledger], reaper: Reaper, keep: dict, memory: MemoryLevel,
                 record: Callable[[int, list], None], phase: Callable[[str], None]):
        self.coll, self.places, self.nodes, self.holders, self.pool = coll, places, nodes, holders, pool
        self.ledger, self.reaper, self.keep, self.memory = ledger, reaper, keep, memory
        self.record, self.phase = record, phase
        self.rank, self.node = coll.rank, nodes[coll.rank]
        self.writer = LevelWriter(places, self.node, coll.rank, coll.size, phase)

    def make_folders(self, step: int, levels: tuple) -> set:
        """Create the step's folders while the snapshot is copied (mkdir and fsync wait on the disk
        without holding the GIL): rank 0's shared one for the manifests, each rank's of each level.
        Any still missing when a file is written is made then. Returns the folders."""
        folders = {self.places.step_dir(step)} if self.rank == 0 else set()
        for level in levels:
            node = None if level == "global" else self.node
            folders.add(self.places.resolve(level, node, Places.relative(level, step, self.rank)).parent)
        for folder in folders:
            try:
                make_dirs_durable(folder)
            except OSError:  # the write reports it, naming the level
                pass
        return folders

    def flush(self, job: SaveJob) -> None:
        """Digest, then commit every level of ``job``; the snapshot then goes to the memory level."""
        snap = job.snapshot
        folders = job.folders.result()
        self.coll.tracing = job.traced
        if self.coll.broken is not None:
            self.record(job.index, [f"step {job.step} was not saved: {self.coll.broken}"])
            _remove_empty(folders)
            return
        self.phase("digest")
        try:
            digest, failed = self._digest(job)
        except CollectiveTimeoutError:
            _remove_empty(folders)
            raise
        if failed:
            self.record(job.index, failed)
            _remove_empty(folders)
            return
        for level in job.levels:
            self._commit_level(job, level, snap, digest)
        job.snapshot = None
        self.memory.retain(snap)

    def _digest(self, job: SaveJob) -> tuple:
        """Allgather every rank's view of the save; ``(Digest, [])`` or ``(None, [failures])``."""
        save_id = tag = None
        if self.ledger is not None:  # rank 0 names the save, and gives it new file names if the step is committed
            save_id = uuid.uuid4().hex
            tag = uuid.uuid4().hex[:8] if self.ledger.is_committed(job.step) else ""
        snap = job.snapshot
        mine = (job.step, save_id, tag, job.error, snap.entries if snap else [], snap.json_text if snap else "{}",
                snap.nbytes if snap else 0, snap.json_keys if snap else ())
        rows = self.coll.allgather(mine, "ckpt_digest")
        failed = [f"step {job.step}, level memory (snapshot), rank {r}: {row[3]}" for r, row in enumerate(rows)
                  if row[3]]
        layouts = [row[4] for row in rows]
        if not failed:
            try:
                _same_on_all("step", [row[0] for row in rows])
                check_layouts(layouts, [row[7] for row in rows])
            except StateError as exc:
                failed = [f"step {job.step}: {exc}"]
        if failed:
            return None, failed
        return Digest(layouts, [row[5] for row in rows], [row[6] for row in rows], rows[0][1], rows[0][2]), []

    def _commit_level(self, job: SaveJob, level: str, snap: Snapshot, digest: Digest) -> None:
        """Write this rank's files of ``level``, vote, and let rank 0 write the manifest."""
        step = job.step
        self.phase(f"{level}:write")
        written, error = [], None
        try:
            if level == "partner":
                held = partner.exchange(self.coll, self.pool, self.holders, snap, digest.layouts, digest.texts,
                                        digest.sizes)
                written = self.writer.held(step, held, digest.tag)
            else:
                written = self.writer.own(level, step, snap, digest.layouts, digest.tag)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.phase(f"{level}:vote")
        try:
            votes = self.coll.allgather((error, [record for record, _ in written]), "ckpt_vote")
        except CollectiveTimeoutError:
            for _, path in written:  # no manifest can vouch for them: rank 0 never got every vote
                remove_file(path)
            raise
        failed = [f"step {step}, level {level}, rank {r}: {e}" for r, (e, _) in enumerate(votes) if e]
        outcome = None
        if not failed and self.rank == 0:
            self.phase(f"{level}:manifest")
            outcome = self._write_manifest(step, level, digest.layouts,
                                           [r for _, records in votes for r in records], digest.save_id)
        if not failed:
            error, dropped = self.coll.bcast(outcome, "ckpt_commit")  # a timeout here leaves the files
            failed = [error] if error else []
        if failed:
            self.record(job.index, failed)
            for _, path in written:
                remove_file(path)
            return
        self.phase(f"{level}:retention")
        self._retire(level, dropped)

    def _retire(self, level: str, dropped: list) -> None:
        """The holders move the dropped files to the trash; the reaper unlinks them later."""
        try:
            if level == "global" and self.rank == 0:
                self.reaper.delete(retention.retire_files(self.places, level, dropped))
            elif level != "global" and retention.is_node_leader(self.nodes, self.rank):
                mine = [r for r in dropped if self.places.node_root(r["node"]) == self.places.node_root(self.node)]
                self.reaper.delete(retention.retire_files(self.places, level, mine))
        except OSError as exc:  # an old step's files stay behind; its manifest is gone already
            log.warning("checkpoint retention at level %s: %s", level, exc)

    def _write_manifest(self, step: int, level: str, layouts: list, files: list, save_id: str) -> tuple:
        """Rank 0: commit ``step`` at ``level`` by writing its manifest (replacing, atomically, the
        manifest of an earlier save of the step); returns ``(error or None, file records to
        retire)``: those of the replaced save, and those of the steps retention drops."""
        try:
            replaced = []
            try:
                replaced = manifest.read(self.places, step, level)["files"]
            except FileNotFoundError:
                pass
            except CheckpointError as exc:  # its files stay; start-up cleanup removes what no manifest lists
                log.warning("checkpoint step %d: the manifest it replaces cannot be read: %s", step, exc)
            document = manifest.build(step, level, self.nodes, layouts, files, save_id)
            added = self.ledger.add(step, level)
            try:
                manifest.write(self.places, step, level, document)
            except BaseException:
                self._undo_manifest(step, level, save_id, added)
                raise
        except Exception as exc:  # the files go below: no manifest may vouch for them
            return f"step {step}, level {level}, rank 0 (manifest): {type(exc).__name__}: {exc}", []
        new = {(f["node"], f["path"]) for f in files}
        dropped = [r for r in replaced if (r["node"], r["path"]) not in new]
        try:  # committed: retention can no longer fail the save
            dropped += self.ledger.retire(level, self.keep[level])
        except Exception as exc:
            log.warning("checkpoint retention at level %s: %s: %s", level, type(exc).__name__, exc)
        return None, dropped

    def _undo_manifest(self, step: int, level: str, save_id: str, added: bool) -> None:
        """After a failed manifest write: remove it if it is in place (its files are about to go),
        keep the replaced one if that is still in place."""
        try:
            ours = manifest.save_id(manifest.read(self.places, step, level)) == save_id
        except FileNotFoundError:
            self.ledger.discard(step, level)
            return
        except Exception:
            ours = False
        if ours:
            remove_file(self.places.manifest_path(step, level))
            self.ledger.discard(step, level)
        elif added:
            self.ledger.discard(step, level)


def _remove_empty(folders: set) -> None:
    for folder in folders:  # made for this save's files; kept if anything else is in them
        with contextlib.suppress(OSError):
            folder.rmdir()
