"""Writing one rank's files of one level: its own rank file, the partner copies it holds, and
on rank 0 the global file (written while its own rank file syncs, so that both fsyncs overlap).
Each file goes through :func:`commit.atomic_path`: fsync, rename, fsync of the folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from hpcrt.checkpoint.errors import CheckpointError
from hpcrt.checkpoint.files.commit import fsync_dir
from hpcrt.checkpoint.files.levels import Places, global_name, rank_name, step_name
from hpcrt.checkpoint.files.safety import is_inside
from hpcrt.checkpoint.format.hdf5 import file_attrs, write_global_file, write_rank_file
from hpcrt.checkpoint.save.snapshot import Snapshot


@dataclass(frozen=True)
class LevelWriter:
    """Writes this rank's files; ``phase`` is told ``"<level>:rename"`` before each rename."""

    places: Places
    node: str
    rank: int
    size: int
    phase: Callable[[str], None]

    def own(self, level: str, step: int, snap: Snapshot, layouts: list, tag: str) -> list:
        """This rank's file of ``level`` (and rank 0's global file): ``[(manifest record, path)]``."""
        attrs = file_attrs(step, self.size, level=level)
        node = None if level == "global" else self.node
        if not (level == "global" and self.rank == 0):
            return [self._write(level, step, snap, self.rank, node, attrs, tag)]
        path = self.places.step_dir(step) / global_name(tag)
        beside: list = []
        written = [self._write(level, step, snap, self.rank, node, attrs, tag, sync_dir=False,
                               while_syncing=lambda: beside.append(write_global_file(
                                   path, layouts, [rank_name(r, tag) for r in range(self.size)], attrs, False)))]
        [(size, digest)] = beside
        fsync_dir(path.parent)  # one fsync of the step folder makes both renames durable
        return written + [({"rank": None, "node": None, "path": f"{step_name(step)}/{path.name}",
                            "size": size, "xxh3_128": digest}, path)]

    def held(self, step: int, held: list, tag: str) -> list:
        """The partner copies this rank holds, ``[(owner, snapshot)]`` (released here), as files."""
        attrs = file_attrs(step, self.size, level="partner")
        written = []
        try:
            for owner, snap in held:
                written.append(self._write("partner", step, snap, owner, self.node, attrs, tag))
        finally:
            for _, snap in held:
                snap.release()
        return written

    def _write(self, level: str, step: int, snap: Snapshot, owner: int, node: Optional[str], attrs: dict,
               tag: str, sync_dir: bool = True, while_syncing: Callable[[], None] = lambda: None) -> tuple:
        """Write ``owner``'s snapshot as a file of ``level``; returns (manifest record, path)."""
        relative = Places.relative(level, step, owner, tag)
        root = self.places.root(level, node)
        path = self.places.resolve(level, node, relative)
        if not is_inside(root, path.parent):
            raise CheckpointError(f"{path.parent} leads out of {root} through a symbolic link; refusing to write there")
        size, digest = write_rank_file(path, snap, {**attrs, "rank": owner}, lambda: self.phase(f"{level}:rename"),
                                       sync_dir, while_syncing)
        return {"rank": owner, "node": node, "path": relative, "size": size, "xxh3_128": digest}, path
