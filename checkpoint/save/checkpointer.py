"""The :class:`Checkpointer`: ``save()`` returns at once; a snapshot thread copies the state to
host memory, a flush thread runs the save protocol (:mod:`.protocol`: write, vote, commit).

Every rank runs the same sequence of collectives per save, on a private duplicate of the
communicator used only by the flush thread (and by ``restore()`` once the thread is idle); every
collective is traced for the monitor and bounded by ``collective_timeout_s`` (:mod:`.collective`).
One Checkpointer writes a directory at a time (:mod:`hpcrt.checkpoint.files.lock`)."""

from __future__ import annotations

import collections
import logging
import queue
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import hpcrt
from hpcrt.backends.staging import PinnedPool

from hpcrt.checkpoint.errors import CheckpointError, StateError
from hpcrt.checkpoint.files.levels import DISK_LEVELS, Places, partner_holders
from hpcrt.checkpoint.files.lock import DirectoryLock
from hpcrt.checkpoint.files.reaper import Reaper
from hpcrt.checkpoint.format import manifest
from hpcrt.checkpoint.format.entries import flatten, unflatten
from hpcrt.checkpoint.format.hdf5 import BESIDE
from hpcrt.checkpoint.restore.memory import MemoryLevel
from hpcrt.checkpoint.restore.restore import restore as restore_collective
from hpcrt.checkpoint.save.collective import Collectives, CollectiveTimeoutError
from hpcrt.checkpoint.save.opening import open_directory
from hpcrt.checkpoint.save.options import (DEFAULT_COLLECTIVE_TIMEOUT_S, DEFAULT_KEEP, check_numbers,
                                           resolve_keep, resolve_levels)
from hpcrt.checkpoint.save.protocol import SaveJob, SaveProtocol
from hpcrt.checkpoint.save.snapshot import take_snapshot

log = logging.getLogger("hpcrt.checkpoint")


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
        check_numbers(global_every, max_pending, collective_timeout_s)
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
            holders = partner_holders(self.nodes)
            self.levels = resolve_levels(levels, holders is not None)
            self.keep = resolve_keep(keep, self.levels)
            ledger = open_directory(self._coll, self.places, self._lock, self.nodes, self.levels)
        except BaseException as exc:
            self._lock.release()
            if not isinstance(exc, CollectiveTimeoutError):
                self._comm.Free()
            raise
        self._max_pending = max_pending
        self._memory = MemoryLevel(self.keep.get("memory"))
        self._errors: list = []  # (save index, message), appended by the flush thread
        self._errors_lock = threading.Lock()
        self._inflight: collections.deque = collections.deque()  # saves not yet known done (caller's thread)
        self._unsnapshotted: list = []  # saves since the last wait_snapshot() (caller's thread only)
        self._count = 0
        self._on_phase: Optional[Callable[[str], None]] = None  # fault-injection tests only
        self._pool = PinnedPool(sys.maxsize)
        self._reaper = Reaper()
        self._protocol = SaveProtocol(self._coll, self.places, self.nodes, holders, self._pool, ledger,
                                      self._reaper, self.keep, self._memory, self._record, self._phase)
        self._snap_queue: queue.Queue = queue.Queue()
        self._flush_queue: queue.Queue = queue.Queue()
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
        job = SaveJob(self._count, step, flat, levels,
                      folders=BESIDE.submit(self._protocol.make_folders, step, levels), traced=self._coll.announce())
        self._count += 1
        self._inflight.append(job)
        self._unsnapshotted.append(job)
        self._snap_queue.put(job)

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
        for step in self._memory.steps():
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
        in_memory = self._memory.restore(self._coll, self.places, step) if not boxes_asked else None
        if in_memory is not None:
            self.restored_from = {self.rank: "memory"}
            return in_memory[0], unflatten(in_memory[1])
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
        self._memory.clear()
        self._lock.release()
        if self._coll.broken is None:
            self._comm.Free()
        self._comm = None

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- caller's thread --------------------------------------------------------------------------
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

    # --- background threads ---------------------------------------------------------------------
    def _phase(self, name: str) -> None:
        if self._on_phase is not None:
            self._on_phase(name)

    def _take_snapshot(self, job: SaveJob) -> None:
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
                self._protocol.flush(job)
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
