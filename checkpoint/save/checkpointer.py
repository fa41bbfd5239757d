"""The :class:`Checkpointer`: ``save()`` returns at once; a snapshot thread copies the state to
host memory, a flush thread writes the levels, votes and commits.

Every rank runs the same sequence of collectives per save, on a private duplicate of the
communicator used only by the flush thread (and by ``restore()`` once the thread is idle):
an allgather of each rank's step, layout and snapshot status (the "digest": it checks that ranks
agree on the step, keys, dtypes and global shapes, feeds the manifest and the partner copies),
then per level an allgather vote and a bcast of rank 0's manifest outcome. A rank's failure is
therefore known to every rank, and nothing ever waits on a peer that gave up. Every collective is
traced for the monitor and bounded by ``collective_timeout_s`` (see :mod:`.collective`).

A committed step is never destroyed by a later save: a step saved again is written under new file
names, its new manifest replaces the old one atomically (the commit), and only then are the old
files retired. One Checkpointer writes a directory at a time (:mod:`.lock`)."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import queue
import socket
import sys
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import hpcrt
from hpcrt.backends.staging import PinnedPool

from hpcrt.checkpoint.errors import CheckpointError, StateError
from hpcrt.checkpoint.files import retention
from hpcrt.checkpoint.files.commit import fsync_dir, make_dirs_durable, remove_file
from hpcrt.checkpoint.files.levels import (DISK_LEVELS, LEVELS, NODE_LEVELS, Places, global_name, partner_holders,
                                           rank_name, step_name)
from hpcrt.checkpoint.files.lock import DirectoryLock
from hpcrt.checkpoint.files.reaper import Reaper
from hpcrt.checkpoint.files.safety import Refused, is_inside, is_real_dir, private_dir
from hpcrt.checkpoint.format import manifest
from hpcrt.checkpoint.format.entries import FlatState, Shard, _same_on_all, check_layouts, flatten, unflatten
from hpcrt.checkpoint.format.hdf5 import BESIDE, file_attrs, write_global_file, write_rank_file
from hpcrt.checkpoint.restore.restore import restore as restore_collective
from hpcrt.checkpoint.save.collective import Collectives, CollectiveTimeoutError
from hpcrt.checkpoint.save.snapshot import Snapshot, take_snapshot
from hpcrt.core.tags import CHECKPOINT_PARTNER

log = logging.getLogger("hpcrt.checkpoint")
DEFAULT_KEEP = {"memory": 1, "local": 2, "partner": 2, "global": 3}
DEFAULT_COLLECTIVE_TIMEOUT_S = 600.0


@dataclass
class _Save:
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


class Checkpointer:
    """Multi-level asynchronous checkpoints of a nested dict of arrays and JSON-able values.

    ``levels``: any of ``memory``, ``local``, ``partner``, ``global`` (default: all of them,
    without ``partner`` on a single node). ``keep``: how many committed steps each level keeps
    (an int for all, or a dict per level). ``global_every``: every k-th save also goes to the
    global level (the first one always does). ``local_dir``: the node-local directory (default
    ``$SLURM_TMPDIR`` or the system temporary directory). ``max_pending``: saves whose flush may
    be outstanding before ``save()`` waits for one (the host memory bound).
    ``collective_timeout_s``: how long a checkpoint collective waits for a peer that does not come
    (it skipped a save, or is stuck or dead) before the save fails on the ranks that wait and the
    Checkpointer becomes unusable. Collective over ``comm`` (default: the hpcrt runtime's
    communicator). Refused (every rank raises) while another Checkpointer writes ``directory``.
    """

    def __init__(self, directory: str | Path, *, levels: Optional[tuple] = None, comm: Any = None,
                 keep: int | dict = DEFAULT_KEEP, global_every: int = 1,
                 local_dir: Optional[str | Path] = None, max_pending: int = 2,
                 collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S):
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
        if isinstance(collective_timeout_s, bool) or not isinstance(collective_timeout_s, (int, float)) or \
                not math.isfinite(collective_timeout_s) or collective_timeout_s <= 0:
            raise ValueError(f"collective_timeout_s must be a finite number of seconds > 0, "
                             f"got {collective_timeout_s!r}")
        self._comm = comm.Dup()
        self._coll = Collectives(self._comm, float(collective_timeout_s))
        self._coll.tracing = self._coll.announce()
        self.rank, self.size = self._comm.rank, self._comm.size
        self.node = hpcrt.get_runtime().node if hpcrt.is_initialized() else socket.gethostname()
        self.places = Places.of(directory, local_dir)
        self._lock = DirectoryLock(self.places.directory)
        self.global_every = global_every
        self.restored_from: dict = {}
        """After :meth:`restore`: for each saved rank, the level its data came from."""
        try:  # every rank raises the same error here, so the duplicate can be freed collectively
            self.nodes: list = self._coll.allgather(self.node, "ckpt_open")
            self._holders = partner_holders(self.nodes)
            self.levels = _resolve_levels(levels, self._holders is not None)
            self.keep = _resolve_keep(keep, self.levels)
            self._open_directory()
        except BaseException as exc:
            self._lock.release()
            if not isinstance(exc, CollectiveTimeoutError):
                self._comm.Free()
            raise
        self._max_pending = max_pending
        self._pool = PinnedPool(sys.maxsize)
        self._memory: collections.OrderedDict = collections.OrderedDict()
        self._memory_lock = threading.Lock()
        self._errors: list = []  # (save index, message), appended by the flush thread
        self._errors_lock = threading.Lock()
        self._inflight: collections.deque = collections.deque()  # saves not yet known done (caller's thread)
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
        :class:`Shard` s and JSON-able values. Ranks must call it in the same order.

        When ``max_pending`` saves are outstanding it first waits for the oldest; if a save it so
        waited for failed, it raises :class:`CheckpointError` naming that failure and does not
        start this save (every rank raises at the same call). The failures of saves still
        outstanding are raised by a later ``save()`` or by :meth:`wait`."""
        self._check_open()
        if self._coll.broken is not None:
            raise CheckpointError(f"step {step} was not saved: {self._coll.broken}")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise StateError(f"checkpoint step must be a non-negative int, got {step!r}")
        flat = flatten(state)
        finished = None
        while len(self._inflight) >= self._max_pending:
            finished = self._inflight.popleft()
            finished.done.wait()
        if finished is not None and (errors := self._take_errors(finished.index)):
            raise CheckpointError("checkpoint failed: " + "; ".join(errors) +
                                  f" (raised by the save() of step {step}, which was not started)")
        levels = tuple(lv for lv in DISK_LEVELS if lv in self.levels
                       and (lv != "global" or self._count % self.global_every == 0))
        self._last = _Save(self._count, step, flat, levels, folders=BESIDE.submit(self._make_folders, step, levels),
                           traced=self._coll.announce())
        self._count += 1
        self._inflight.append(self._last)
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
        step, level and rank of each failure not raised yet (by ``save()`` or an earlier ``wait()``)."""
        self._drain()
        errors = self._take_errors(None)
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
        numpy arrays. :attr:`restored_from` then tells which level each saved rank's data came from.
        A newer step that cannot be restored (damaged manifest, missing or corrupt files, files
        that contradict their manifest) is skipped on every rank, with a WARNING saying why."""
        self._check_open()
        self._drain()
        self._coll.check()
        self._coll.tracing = self._coll.announce()
        # Whether to try the memory level is one choice for all ranks: their collectives differ.
        boxes_asked = any(self._coll.allgather(shards is not None, "ckpt_restore_mode"))
        in_memory = self._memory_step(step) if not boxes_asked else None
        if in_memory is not None:
            self.restored_from = {self.rank: "memory"}
            return in_memory
        found, flat, self.restored_from = restore_collective(self._coll, self.places, self.nodes, step, shards)
        if self.rank == 0:
            log.info("restored step %d from %s", found, ", ".join(
                f"{level} (old ranks {[r for r, lv in sorted(self.restored_from.items()) if lv == level]})"
                for level in DISK_LEVELS if level in self.restored_from.values()))
        return found, unflatten(flat)

    def close(self) -> None:
        """Finish outstanding saves, stop the threads and free the communicator (collective).
        After a collective timed out the communicator is left allocated (MPI cannot cancel the
        collective the other ranks never joined) and nothing waits for the other ranks."""
        if self._comm is None:
            return
        self._drain()
        self._snap_queue.put(None)
        for thread in self._threads:
            thread.join()
        self._reaper.close()
        with self._memory_lock:
            for snap in self._memory.values():
                snap.release()
            self._memory.clear()
        self._lock.release()
        if self._coll.broken is None:
            self._comm.Free()
        self._comm = None

    def _check_open(self) -> None:
        if self._comm is None:
            raise CheckpointError("this Checkpointer is closed")

    def _drain(self) -> None:
        while self._inflight:
            self._inflight.popleft().done.wait()

    def _record(self, index: int, errors: list) -> None:
        with self._errors_lock:
            self._errors.extend((index, e) for e in errors)

    def _take_errors(self, upto: Optional[int]) -> list:
        """Remove and return the messages of saves up to index ``upto`` (None: all)."""
        with self._errors_lock:
            taken = [e for i, e in self._errors if upto is None or i <= upto]
            self._errors = [(i, e) for i, e in self._errors if upto is not None and i > upto]
        return taken

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- start-up -------------------------------------------------------------------------------
    def _open_directory(self) -> None:
        """Rank 0 creates or checks DIR and takes its lock, then cleans what a crash left there;
        each node's first rank makes or checks the node-local folder (private to this user) and
        cleans it. Every rank learns every failure in the same collective."""
        error = None
        self._ledger: Optional[retention.Ledger] = None
        if self.rank == 0:
            try:
                manifest.create_directory(self.places)
                if self._lock.acquire():
                    _warn_left(retention.clean_shared(self.places))
                else:
                    log.warning("checkpoint directory %s is read-only: opened without the lock and without "
                                "start-up cleanup; saves there will fail", self.places.directory)
                self._ledger = retention.Ledger(self.places)
            except CheckpointError as exc:
                error = exc
            except Exception as exc:  # whatever rank 0 trips on, every rank learns it below
                error = CheckpointError(f"checkpoint directory {self.places.directory}: {type(exc).__name__}: {exc}")
        error = self._coll.bcast(error, "ckpt_open_directory")
        if error is not None:
            raise error
        problem = None
        if retention.is_node_leader(self.nodes, self.rank):
            problem = self._open_node_folder()
        problems = [p for p in self._coll.allgather(problem, "ckpt_open_local") if p]
        if problems:
            raise CheckpointError("; ".join(problems))

    def _open_node_folder(self) -> Optional[str]:
        """Make (or check) this node's private folder and clean it; an error message, or None."""
        root, node_root = self.places.local_root, self.places.node_root(self.node)
        uses_node_levels = any(lv in self.levels for lv in NODE_LEVELS)
        try:
            if uses_node_levels:
                private_dir(root)
                private_dir(node_root)
            elif not is_real_dir(node_root):  # nothing of ours to clean
                return None
            else:
                private_dir(root)
            _warn_left(retention.clean_node(self.places, self.node))
        except Refused as exc:
            message = (f"node-local checkpoint folder on {self.node}: {exc}; refusing to write or delete anything "
                       "there (pass another local_dir=)")
            if uses_node_levels:
                return message
            log.warning("checkpoint: %s", message)
        except OSError as exc:
            if uses_node_levels:
                return f"node-local checkpoint folder {root} on {self.node}: {exc}"
            log.warning("checkpoint: cleaning %s: %s", node_root, exc)
        return None

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
            except CollectiveTimeoutError as exc:
                self._record(job.index, [f"step {job.step}: {exc}"])
            except Exception as exc:  # a bug, not an I/O error: report it rather than die silently
                log.exception("checkpoint step %d: flush failed", job.step)
                self._record(job.index, [f"step {job.step}, rank {self.rank}: {type(exc).__name__}: {exc}"])
            finally:
                if job.snapshot is not None:  # not handed to the memory level
                    job.snapshot.release()
                    job.snapshot = None
                job.done.set()

    def _flush(self, job: _Save) -> None:
        snap, error = job.snapshot, job.error
        folders = job.folders.result()
        self._coll.tracing = job.traced
        if self._coll.broken is not None:
            self._record(job.index, [f"step {job.step} was not saved: {self._coll.broken}"])
            self._remove_empty(folders)
            return
        self._phase("digest")
        save_id = tag = None
        if self._ledger is not None:  # rank 0 names the save, and gives it new file names if the step is committed
            save_id = uuid.uuid4().hex
            tag = uuid.uuid4().hex[:8] if self._ledger.is_committed(job.step) else ""
        digest = (job.step, save_id, tag, error, snap.entries if snap else [], snap.json_text if snap else "{}",
                  snap.nbytes if snap else 0)
        try:
            rows = self._coll.allgather(digest, "ckpt_digest")
        except CollectiveTimeoutError:
            self._remove_empty(folders)
            raise
        save_id, tag = rows[0][1], rows[0][2]
        failed = [f"step {job.step}, level memory (snapshot), rank {r}: {row[3]}" for r, row in enumerate(rows)
                  if row[3]]
        layouts = [row[4] for row in rows]
        texts = [row[5] for row in rows]
        if not failed:
            try:
                _same_on_all("step", [row[0] for row in rows])
                check_layouts(layouts, [json.loads(t).keys() for t in texts])
            except StateError as exc:
                failed = [f"step {job.step}: {exc}"]
        if failed:
            self._record(job.index, failed)
            self._remove_empty(folders)
            return
        for level in job.levels:
            self._commit_level(job, level, snap, layouts, texts, [row[6] for row in rows], save_id, tag)
        job.snapshot = None
        self._retain_in_memory(snap)

    @staticmethod
    def _remove_empty(folders: set) -> None:
        for folder in folders:  # made for this save's files; kept if anything else is in them
            with contextlib.suppress(OSError):
                folder.rmdir()

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

    def _commit_level(self, job: _Save, level: str, snap: Snapshot, layouts: list, texts: list,
                      sizes: list, save_id: str, tag: str) -> None:
        """Write this rank's files of ``level``, vote, and let rank 0 write the manifest."""
        step = job.step
        self._phase(f"{level}:write")
        written, error = [], None
        try:
            written = self._write_level(step, level, snap, layouts, texts, sizes, tag)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._phase(f"{level}:vote")
        try:
            votes = self._coll.allgather((error, [record for record, _ in written]), "ckpt_vote")
        except CollectiveTimeoutError:
            for _, path in written:  # no manifest can vouch for them: rank 0 never got every vote
                remove_file(path)
            raise
        failed = [f"step {step}, level {level}, rank {r}: {e}" for r, (e, _) in enumerate(votes) if e]
        outcome = None
        if not failed and self.rank == 0:
            self._phase(f"{level}:manifest")
            outcome = self._write_manifest(step, level, layouts, [r for _, records in votes for r in records],
                                           save_id)
        if not failed:
            error, dropped = self._coll.bcast(outcome, "ckpt_commit")  # a timeout here leaves the files
            failed = [error] if error else []
        if failed:
            self._record(job.index, failed)
            for _, path in written:
                remove_file(path)
            return
        self._phase(f"{level}:retention")
        try:
            if level == "global" and self.rank == 0:
                self._reaper.delete(retention.retire_files(self.places, level, dropped))
            elif level != "global" and retention.is_node_leader(self.nodes, self.rank):
                mine = [r for r in dropped if self.places.node_root(r["node"]) == self.places.node_root(self.node)]
                self._reaper.delete(retention.retire_files(self.places, level, mine))
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
            added = self._ledger.add(step, level)
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
            dropped += self._ledger.retire(level, self.keep[level])
        except Exception as exc:
            log.warning("checkpoint retention at level %s: %s: %s", level, type(exc).__name__, exc)
        return None, dropped

    def _undo_manifest(self, step: int, level: str, save_id: str, added: bool) -> None:
        """After a failed manifest write: remove it if it is in place (its files are about to go),
        keep the replaced one if that is still in place."""
        try:
            ours = manifest.save_id(manifest.read(self.places, step, level)) == save_id
        except FileNotFoundError:
            self._ledger.discard(step, level)
            return
        except Exception:
            ours = False
        if ours:
            remove_file(self.places.manifest_path(step, level))
            self._ledger.discard(step, level)
        elif added:
            self._ledger.discard(step, level)

    def _write_level(self, step: int, level: str, snap: Snapshot, layouts: list, texts: list,
                     sizes: list, tag: str) -> list:
        """This rank's files of ``level``: ``[(manifest record, absolute path)]``."""
        before_rename = (lambda: self._phase(f"{level}:rename")) if self._on_phase else None
        attrs = file_attrs(step, self.size, level=level)
        if level == "partner":
            written = []
            for owner, held in self._exchange_partner(snap, layouts, texts, sizes):
                try:
                    written.append(self._write(level, step, held, owner, self.node, attrs, before_rename, tag))
                finally:
                    held.release()
            return written
        node = self.node if level == "local" else None
        if not (level == "global" and self.rank == 0):
            return [self._write(level, step, snap, self.rank, node, attrs, before_rename, tag)]
        # rank 0 writes the global file while its rank file syncs, so that their fsyncs overlap; one
        # fsync of the step folder then makes both renames durable
        path = self.places.step_dir(step) / global_name(tag)
        beside: list = []
        written = [self._write(level, step, snap, self.rank, node, attrs, before_rename, tag, sync_dir=False,
                               while_syncing=lambda: beside.append(write_global_file(
                                   path, layouts, [rank_name(r, tag) for r in range(self.size)], attrs, False)))]
        [(size, digest)] = beside
        fsync_dir(path.parent)
        return written + [({"rank": None, "node": None, "path": f"{step_name(step)}/{path.name}",
                            "size": size, "xxh3_128": digest}, path)]

    def _write(self, level: str, step: int, snap: Snapshot, owner: int, node: Optional[str], attrs: dict,
               before_rename: Optional[Callable[[], None]], tag: str, sync_dir: bool = True,
               while_syncing: Callable[[], None] = lambda: None) -> tuple:
        """Write ``owner``'s snapshot as a file of ``level``; returns (manifest record, path)."""
        relative = Places.relative(level, step, owner, tag)
        root = self.places.root(level, node)
        path = self.places.resolve(level, node, relative)
        if not is_inside(root, path.parent):
            raise CheckpointError(f"{path.parent} leads out of {root} through a symbolic link; refusing to write there")
        size, digest = write_rank_file(path, snap, {**attrs, "rank": owner}, before_rename, sync_dir, while_syncing)
        return {"rank": owner, "node": node, "path": relative, "size": size, "xxh3_128": digest}, path

    def _exchange_partner(self, snap: Snapshot, layouts: list, texts: list, sizes: list) -> list:
        """Send this rank's snapshot to its holder; receive, as snapshots, those this rank holds."""
        held = [r for r, h in enumerate(self._holders) if h == self.rank]
        received = [Snapshot(snap.step, layouts[r], texts[r], self._pool.acquire(max(sizes[r], 1)), self._pool)
                    for r in held]
        requests = [self._comm.Irecv(s.buffer[:sizes[r]], source=r, tag=CHECKPOINT_PARTNER)
                    for r, s in zip(held, received)]
        requests.append(self._comm.Isend(snap.buffer[:snap.nbytes], dest=self._holders[self.rank],
                                         tag=CHECKPOINT_PARTNER))
        # on a timeout the buffers stay with the abandoned requests (MPI may still write them)
        self._coll.traced_wait(requests, "ckpt_partner", snap.nbytes, keep=(snap, received))
        return list(zip(held, received))

    # --- memory level -----------------------------------------------------------------------------
    def _memory_step(self, step: Optional[int]) -> Optional[tuple]:
        """``(step, state)`` from the in-memory snapshots when every rank holds the wanted step."""
        if "memory" not in self.levels:
            return None
        with self._memory_lock:
            mine = set(self._memory)
        common = set.intersection(*self._coll.allgather(mine, "ckpt_restore_memory"))
        on_disk, error = [], None
        if self.rank == 0:
            try:
                on_disk = sorted(manifest.committed(self.places))
            except Exception as exc:
                error = CheckpointError(f"checkpoint directory {self.places.directory}: {type(exc).__name__}: {exc}")
        on_disk, error = self._coll.bcast((on_disk, error), "ckpt_restore_memory")
        if error is not None:
            raise error
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


def _warn_left(left: list) -> None:
    for path, why in left:
        log.warning("checkpoint start-up cleanup: %s left in place (%s)", path, why)


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
