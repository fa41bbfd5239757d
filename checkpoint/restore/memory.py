"""The memory level: each rank keeps its newest committed snapshots in host memory, and a restore
of a step that every rank holds there needs no file at all."""

from __future__ import annotations

import collections
import json
import threading
from typing import Optional

from hpcrt.checkpoint.errors import CheckpointError
from hpcrt.checkpoint.files.levels import Places
from hpcrt.checkpoint.format import manifest
from hpcrt.checkpoint.format.entries import Shard
from hpcrt.checkpoint.save.collective import Collectives
from hpcrt.checkpoint.save.snapshot import Snapshot


class MemoryLevel:
    """This rank's snapshots of the newest ``keep`` steps (``keep=None``: the level is off and
    every snapshot handed over is released at once). Thread-safe: the flush thread retains, the
    caller's thread lists and restores."""

    def __init__(self, keep: Optional[int]):
        self.keep = keep
        self._snaps: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def retain(self, snap: Snapshot) -> None:
        """Keep ``snap`` (replacing an older snapshot of its step), dropping the oldest beyond ``keep``."""
        if self.keep is None:
            snap.release()
            return
        with self._lock:
            if (old := self._snaps.pop(snap.step, None)) is not None:
                old.release()
            self._snaps[snap.step] = snap
            while len(self._snaps) > self.keep:
                self._snaps.popitem(last=False)[1].release()

    def steps(self) -> list:
        with self._lock:
            return list(self._snaps)

    def restore(self, coll: Collectives, places: Places, step: Optional[int]) -> Optional[tuple[int, dict]]:
        """Collective (unless the level is off): ``(step, flat state)`` when every rank holds the
        wanted step (default: the newest step in memory or on disk), else None."""
        if self.keep is None:
            return None
        common = set.intersection(*coll.allgather(set(self.steps()), "ckpt_restore_memory"))
        on_disk, error = [], None
        if coll.rank == 0:
            try:
                on_disk = sorted(manifest.committed(places))
            except Exception as exc:
                error = CheckpointError(f"checkpoint directory {places.directory}: {type(exc).__name__}: {exc}")
        on_disk, error = coll.bcast((on_disk, error), "ckpt_restore_memory")
        if error is not None:
            raise error
        wanted = step if step is not None else max(common | set(on_disk), default=None)
        if wanted not in common:
            return None
        with self._lock:
            snap = self._snaps[wanted]
            flat = json.loads(snap.json_text)
            for entry in snap.entries:
                array = snap.view(entry).copy()
                flat[entry.key] = array if entry.global_shape is None else \
                    Shard(array, entry.global_shape, entry.offset)
        return wanted, flat

    def clear(self) -> None:
        """Release every snapshot."""
        with self._lock:
            for snap in self._snaps.values():
                snap.release()
            self._snaps.clear()
