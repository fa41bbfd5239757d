"""The :class:`Checkpointer`: ``save()`` returns at once; a snapshot thread copies the state to
host memory, a flush thread writes the levels, votes and commits.

Every rank runs the same sequence of collectives per save, on a private duplicate of the
communicator used only by the flush thread (and by ``restore()`` once the thread is idle):
an allgather of each rank's layout and snapshot status (the "digest": it checks that ranks agree
on keys, dtypes and global shapes, feeds the manifest and the partner copies), then per level an
allgather vote and a bcast of rank 0's manifest outcome. A rank's failure is therefore known to
every rank, and nothing ever waits on a peer that gave up."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import queue
import socket
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import hpcrt
from hpcrt._src.idle_wait import idle_until_all_arrive, idle_wait
from hpcrt._src.staging import PinnedPool

from . import manifest, retention
from .commit import fsync_dir, make_dirs_durable, remove_file, write_json_atomic
from .errors import CheckpointError, StateError
from .format import BESIDE, file_attrs, write_global_file, write_rank_file
from .levels import DISK_LEVELS, GLOBAL_FILE, LEVELS, Places, partner_holders, rank_name
from .reaper import Reaper
from .restore import restore as restore_collective
from .snapshot import Snapshot, take_snapshot
from .state import ArrayEntry, FlatState, Shard, check_layouts, flatten, unflatten

log = logging.getLogger("hpcrt.checkpoint")
PARTNER_TAG = 0x4B8
DEFAULT_KEEP = {"memory": 1, "local": 2, "partner": 2, "global": 3}


@dataclass
class _Save:
    """One save in flight."""

    step: int
    flat: Optional[FlatState]
    levels: tuple
    folders: Future
    snapshot: Optional[Snapshot] = None
    error: Optional[str] = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    snapshotted: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class Checkpointer:
    """Multi-level asynchronous checkpoints of a nested dict of arrays and JSON-able values.

    ``levels``: any of ``memory``, ``local``, ``partner``, ``global`` (default: all of them,
    without ``partner`` on a single node). ``keep``: how many committed steps each level keeps
    (an int for all, or a dict per level). ``global_every``: every k-th save also goes to the
    global level (the first one always does). ``local_dir``: the node-local directory (default
    ``$SLURM_TMPDIR`` or the system temporary directory). ``max_pending``: saves whose flush may
    be outstanding before ``save()`` waits for one (the host memory bound). Collective over
    ``comm`` (default: the hpcrt runtime's communicator).
    """

    def __init__(self, directory: str | Path, *, levels: Optional[tuple] = None, comm: Any = None,
                 keep: int | dict = DEFAULT_KEEP, global_every: int = 1,
                 local_dir: Optional[str | Path] = None, max_pending: int = 2):
        from mpi4py import MPI  # imported on use: the CLI reads checkpoints without initializing MPI
        if comm is None:
            comm = hpcrt.init().comm
        if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
            raise CheckpointError("hpcrt.checkpoint writes from background threads and needs "
                                  "MPI_THREAD_MULTIPLE; initialize MPI through hpcrt.init() or mpi4py's default")
        if not isinstance(global_every, int) or global_every < 1:
            raise ValueError(f"global_every must be a positive integer, got {global_every!r}")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
        self._comm = comm.Dup()
        self.rank, self.size = self._comm.rank, self._comm.size
        self.node = hpcrt.get_runtime().node if hpcrt.is_initialized() else socket.gethostname()
        self.nodes: list = self._comm.allgather(self.node)
        self.places = Places.of(directory, local_dir)
        self._holders = partner_holders(self.nodes)
        self.global_every = global_every
        self.restored_from: dict = {}
        """After :meth:`restore`: for each saved rank, the level its data came from."""
        try:  # every rank raises the same error here, so the duplicate can be freed collectively
            self.levels = _resolve_levels(levels, self._holders is not None)
            self.keep = _resolve_keep(keep, self.levels)
            self._open_directory()
        except BaseException:
            self._comm.Free()
            raise
        self._pool = PinnedPool(sys.maxsize)
        self._memory: collections.OrderedDict = collections.OrderedDict()
        self._memory_lock = threading.Lock()
        self._errors: list = []
        self._slots = threading.Semaphore(max_pending)
        self._last: Optional[_Save] = None
        self._unsnapshotted: list = []  # saves since the last wait_snapshot() (caller's thread only)
        self._count = 0
        self._on_phase: Optional[Callable[[str], None]] = None  # fault-injection tests only
        self._snap_queue: queue.Queue = queue.Queue()
        self._flush_queue: queue.Queue = queue.Queue()
        self._reaper = Reaper()
        self._threads = [threading.Thread(target=self._snapshot_loop, name="hpcrt-ckpt-snapshot", daemon=True),
                         threading.Thread(target=self._flush_loop, name="hpcrt-ckpt-flush", daemon=True)]
        for thread in self._threads:
            thread.start()

    # --- public API ---------------------------------------------------------------------------
    def save(self, step: int, state: dict) -> None:
        """Start checkpointing ``state`` as ``step`` and return: arrays are copied to host memory in
        the background (call :meth:`wait_snapshot` before mutating them); JSON-able values are
        serialized here. Raises :class:`StateError` for a state that is not a dict of arrays,
        :class:`Shard` s and JSON-able values. Ranks must call it in the same order."""
        self._check_open()
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise StateError(f"checkpoint step must be a non-negative int, got {step!r}")
        flat = flatten(state)
        levels = tuple(lv for lv in DISK_LEVELS if lv in self.levels
                       and (lv != "global" or self._count % self.global_every == 0))
        self._count += 1
        self._slots.acquire()
        self._last = _Save(step, flat, levels, folders=BESIDE.submit(self._make_folders, step, levels))
        self._unsnapshotted.append(self._last)
        self._snap_queue.put(self._last)

    def wait_snapshot(self) -> None:
        """Block until every save's arrays are in host memory (then they may be mutated). A copy
        the snapshot thread has not started yet is made by the caller, which is waiting anyway."""
        for job in self._unsnapshotted:
            self._take_snapshot(job)
        self._unsnapshotted.clear()

    def wait(self) -> None:
        """Block until every level of every save is done; raise :class:`CheckpointError` naming the
        step, level and rank of each failure since the last ``wait()``."""
        if self._last is not None:
            self._last.done.wait()
        errors, self._errors = self._errors, []
        if errors:
            raise CheckpointError("checkpoint failed: " + "; ".join(errors))

    def list(self) -> list:
        """``[{"step": s, "levels": [...]}, ...]`` oldest first: committed steps (manifests in DIR)
        and this rank's in-memory snapshots."""
        found = {s: list(levels) for s, levels in manifest.committed(self.places).items()}
        with self._memory_lock:
            for step in self._memory:
                found.setdefault(step, []).insert(0, "memory")
        return [{"step": s, "levels": found[s]} for s in sorted(found)]

    def latest(self) -> Optional[int]:
        """The newest committed step, or None."""
        steps = self.list()
        return steps[-1]["step"] if steps else None

    def restore(self, step: Optional[int] = None, *, shards: Optional[dict] = None) -> tuple[int, dict]:
        """Collective: ``(step, state)`` of ``step`` (default: the newest one every rank can read and
        verify), from the fastest level holding a good copy. Sharded arrays come back as
        :class:`Shard` s: with the saved rank count each rank gets its saved shard; otherwise an
        even split along axis 0, unless ``shards={key: (offset, shape)}`` asks for other boxes.
        Plain arrays and JSON values come from old rank ``rank % old_size``; arrays come back as
        numpy arrays. :attr:`restored_from` then tells which level each saved rank's data came from."""
        self._check_open()
        if self._last is not None:
            self._last.done.wait()
        in_memory = self._memory_step(step) if shards is None else None
        if in_memory is not None:
            self.restored_from = {self.rank: "memory"}
            return in_memory
        found, flat, self.restored_from = restore_collective(self._comm, self.places, self.nodes, step, shards)
        if self.rank == 0:
            log.info("restored step %d from %s", found, ", ".join(
                f"{level} (old ranks {[r for r, lv in sorted(self.restored_from.items()) if lv == level]})"
                for level in DISK_LEVELS if level in self.restored_from.values()))
        return found, unflatten(flat)

    def close(self) -> None:
        """Finish outstanding saves, stop the threads and free the communicator (collective)."""
        if self._comm is None:
            return
        if self._last is not None:
            self._last.done.wait()
        self._snap_queue.put(None)
        for thread in self._threads:
            thread.join()
        self._reaper.close()
        with self._memory_lock:
            for snap in self._memory.values():
                snap.release()
            self._memory.clear()
        self._comm.Free()
        self._comm = None

    def _check_open(self) -> None:
        if self._comm is None:
            raise CheckpointError("this Checkpointer is closed")

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- start-up -------------------------------------------------------------------------------
    def _open_directory(self) -> None:
        """Rank 0 creates or checks DIR; each node's first rank cleans what a crash left there."""
        error = None
        self._ledger: Optional[retention.Ledger] = None
        try:
            if self.rank == 0:
                manifest.create_directory(self.places)
                retention.clean_shared(self.places)
                self._ledger = retention.Ledger(self.places)
        except (CheckpointError, OSError) as exc:
            error = exc
        error = self._comm.bcast(error)
        if error is not None:
            raise error if isinstance(error, CheckpointError) else CheckpointError(
                f"checkpoint directory {self.places.directory}: {error}")
        if retention.is_node_leader(self.nodes, self.rank):
            try:
                retention.clean_node(self.places, self.node)
            except OSError as exc:  # leftovers are harmless: no manifest vouches for them
                log.warning("checkpoint: cleaning %s: %s", self.places.node_root(self.node), exc)
        self._comm.Barrier()

    # --- background threads ---------------------------------------------------------------------
    def _phase(self, name: str) -> None:
        if self._on_phase is not None:
            self._on_phase(name)

    def _take_snapshot(self, job: _Save) -> None:
        """Copy ``job``'s arrays to host memory, once, in whichever thread gets there first."""
        with job.lock:
            if job.snapshotted.is_set():
                return
            try:
                self._phase("snapshot")
                job.snapshot = take_snapshot(job.step, job.flat, self._pool)
            except Exception as exc:
                job.error = f"{type(exc).__name__}: {exc}"
            job.flat = None  # drop the references to the caller's arrays
            job.snapshotted.set()

    def _snapshot_loop(self) -> None:
        while (job := self._snap_queue.get()) is not None:
            self._take_snapshot(job)
            self._flush_queue.put(job)
        self._flush_queue.put(None)

    def _flush_loop(self) -> None:
        while (job := self._flush_queue.get()) is not None:
            try:
                self._flush(job)
            except Exception as exc:  # a bug, not an I/O error: report it rather than die silently
                log.exception("checkpoint step %d: flush failed", job.step)
                self._errors.append(f"step {job.step}, rank {self.rank}: {type(exc).__name__}: {exc}")
            finally:
                job.done.set()
                self._slots.release()

    def _flush(self, job: _Save) -> None:
        snap, error = job.snapshot, job.error
        folders = job.folders.result()
        self._phase("digest")
        if self._ledger is not None:  # a step saved again: its old manifests must not vouch for new files
            try:
                self._ledger.uncommit(job.step)
            except OSError as exc:
                error = error or f"{type(exc).__name__}: {exc}"
        digest = (error, [e.to_json() for e in snap.entries], snap.json_text, snap.nbytes) if snap else \
            (error, [], "{}", 0)
        idle_until_all_arrive(self._comm)  # this thread waits for the others without taking a core
        rows = self._comm.allgather(digest)
        failed = [f"step {job.step}, level memory (snapshot), rank {r}: {row[0]}" for r, row in enumerate(rows)
                  if row[0]]
        layouts = [[ArrayEntry.from_json(x) for x in row[1]] for row in rows]
        texts = [row[2] for row in rows]
        if not failed:
            try:
                check_layouts(layouts, [json.loads(t).keys() for t in texts])
            except StateError as exc:
                failed = [f"step {job.step}: {exc}"]
        if failed:
            self._errors.extend(failed)
            if snap is not None:
                snap.release()
            for folder in folders:  # made for this save's files; kept if anything else is in them
                with contextlib.suppress(OSError):
                    folder.rmdir()
            return
        for level in job.levels:
            self._commit_level(job.step, level, snap, layouts, texts, [row[3] for row in rows])
        self._retain_in_memory(snap)

    def _retain_in_memory(self, snap: Snapshot) -> None:
        if "memory" not in self.levels:
            snap.release()
            return
        with self._memory_lock:
            if (old := self._memory.pop(snap.step, None)) is not None:
                old.release()
            self._memory[snap.step] = snap
            while len(self._memory) > self.keep["memory"]:
                self._memory.popitem(last=False)[1].release()

    def _make_folders(self, step: int, levels: tuple) -> set:
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

    def _commit_level(self, step: int, level: str, snap: Snapshot, layouts: list, texts: list,
                      sizes: list) -> None:
        """Write this rank's files of ``level``, vote, and let rank 0 write the manifest."""
        self._phase(f"{level}:write")
        written, error = [], None
        try:
            written = self._write_level(step, level, snap, layouts, texts, sizes)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._phase(f"{level}:vote")
        idle_until_all_arrive(self._comm)
        votes = self._comm.allgather((error, [record for record, _ in written]))
        failed = [f"step {step}, level {level}, rank {r}: {e}" for r, (e, _) in enumerate(votes) if e]
        outcome = None
        if not failed and self.rank == 0:
            self._phase(f"{level}:manifest")
            try:
                files = [record for _, records in votes for record in records]
                manifest_doc = manifest.build(step, level, self.nodes, layouts, files)
                self._ledger.add(step, level)
                write_json_atomic(self.places.manifest_path(step, level), manifest_doc)
                outcome = (None, self._ledger.retire(level, self.keep[level]))
            except Exception as exc:  # the files go below: no manifest may vouch for them
                self._ledger.discard(step, level)
                outcome = (f"step {step}, level {level}, rank 0 (manifest): {type(exc).__name__}: {exc}", [])
        if not failed:
            idle_until_all_arrive(self._comm)  # rank 0 writes the manifest meanwhile
            error, dropped = self._comm.bcast(outcome)
            failed = [error] if error else []
        if failed:
            self._errors.extend(failed)
            for _, path in written:
                remove_file(path)
            return
        self._phase(f"{level}:retention")
        try:
            if level == "global" and self.rank == 0:
                self._reaper.delete(retention.retire_files(self.places, level, dropped))
            elif level != "global" and retention.is_node_leader(self.nodes, self.rank):
                mine = [r for r in dropped if r["node"] == self.node]
                self._reaper.delete(retention.retire_files(self.places, level, mine))
        except OSError as exc:  # an old step's files stay behind; its manifest is gone already
            log.warning("checkpoint retention at level %s: %s", level, exc)

    def _write_level(self, step: int, level: str, snap: Snapshot, layouts: list, texts: list,
                     sizes: list) -> list:
        """This rank's files of ``level``: ``[(manifest record, absolute path)]``."""
        before_rename = (lambda: self._phase(f"{level}:rename")) if self._on_phase else None
        attrs = file_attrs(step, self.size, level=level)
        if level == "partner":
            written = []
            for owner, held in self._exchange_partner(snap, layouts, texts, sizes):
                try:
                    written.append(self._write(level, step, held, owner, self.node, attrs, before_rename))
                finally:
                    held.release()
            return written
        node = self.node if level == "local" else None
        if not (level == "global" and self.rank == 0):
            return [self._write(level, step, snap, self.rank, node, attrs, before_rename)]
        # rank 0 writes global.h5 while its rank file syncs, so that their fsyncs overlap; one fsync
        # of the step folder then makes both renames durable
        path = self.places.step_dir(step) / GLOBAL_FILE
        beside: list = []
        written = [self._write(level, step, snap, self.rank, node, attrs, before_rename, sync_dir=False,
                               while_syncing=lambda: beside.append(write_global_file(
                                   path, layouts, [rank_name(r) for r in range(self.size)], attrs, False)))]
        [(size, digest)] = beside
        fsync_dir(path.parent)
        return written + [({"rank": None, "node": None, "path": f"{path.parent.name}/{GLOBAL_FILE}",
                            "size": size, "xxh3_128": digest}, path)]

    def _write(self, level: str, step: int, snap: Snapshot, owner: int, node: Optional[str], attrs: dict,
               before_rename: Optional[Callable[[], None]], sync_dir: bool = True,
               while_syncing: Callable[[], None] = lambda: None) -> tuple:
        """Write ``owner``'s snapshot as a file of ``level``; returns (manifest record, path)."""
        relative = Places.relative(level, step, owner)
        path = self.places.resolve(level, node, relative)
        size, digest = write_rank_file(path, snap, {**attrs, "rank": owner}, before_rename, sync_dir, while_syncing)
        return {"rank": owner, "node": node, "path": relative, "size": size, "xxh3_128": digest}, path

    def _exchange_partner(self, snap: Snapshot, layouts: list, texts: list, sizes: list) -> list:
        """Send this rank's snapshot to its holder; receive, as snapshots, those this rank holds."""
        held = [r for r, h in enumerate(self._holders) if h == self.rank]
        received = [Snapshot(snap.step, layouts[r], texts[r], self._pool.acquire(max(sizes[r], 1)), self._pool)
                    for r in held]
        requests = [self._comm.Irecv(s.buffer[:sizes[r]], source=r, tag=PARTNER_TAG)
                    for r, s in zip(held, received)]
        requests.append(self._comm.Isend(snap.buffer[:snap.nbytes], dest=self._holders[self.rank],
                                         tag=PARTNER_TAG))
        idle_wait(requests)
        return list(zip(held, received))

    # --- memory level -----------------------------------------------------------------------------
    def _memory_step(self, step: Optional[int]) -> Optional[tuple]:
        """``(step, state)`` from the in-memory snapshots when every rank holds the wanted step."""
        if "memory" not in self.levels:
            return None
        with self._memory_lock:
            mine = set(self._memory)
        common = set.intersection(*self._comm.allgather(mine))
        on_disk = self._comm.bcast(sorted(manifest.committed(self.places)) if self.rank == 0 else None)
        wanted = step if step is not None else max(common | set(on_disk), default=None)
        if wanted not in common:
            return None
        with self._memory_lock:
            snap = self._memory[wanted]
            flat = json.loads(snap.json_text)
            for entry in snap.entries:
                array = snap.view(entry).copy()
                flat[entry.key] = array if entry.global_shape is None else \
                    Shard(array, entry.global_shape, entry.offset)
        return wanted, unflatten(flat)


def _resolve_levels(levels: Optional[tuple], multi_node: bool) -> tuple:
    if levels is None:
        return tuple(lv for lv in LEVELS if multi_node or lv != "partner")
    if isinstance(levels, str):
        levels = (levels,)
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown or not levels:
        raise ValueError(f"checkpoint levels must be a non-empty subset of {LEVELS}, got {levels!r}")
    if "partner" in levels and not multi_node:
        raise ValueError("checkpoint level 'partner' needs ranks on at least two nodes (real, or virtual "
                         "ones from a topology file); this job runs on one")
    return tuple(lv for lv in LEVELS if lv in levels)


def _resolve_keep(keep: int | dict, levels: tuple) -> dict:
    per_level = {lv: keep for lv in LEVELS} if isinstance(keep, int) else {**DEFAULT_KEEP, **keep}
    bad = {lv: k for lv, k in per_level.items() if not isinstance(k, int) or isinstance(k, bool) or k < 1}
    if bad or (isinstance(keep, dict) and set(keep) - set(LEVELS)):
        raise ValueError(f"keep must be a positive int or a dict {{level: positive int}}, got {keep!r}")
    return {lv: per_level[lv] for lv in levels}
