"""Retention (keep the last k committed steps per level) and cleanup after a crash.

Deletion order keeps the rule "no manifest, no checkpoint" safe: a step's manifest goes first,
its files after (moved to the trash at once, unlinked by the reaper later); files that no
manifest covers (a save a crash interrupted) are garbage."""

from __future__ import annotations

import bisect
import contextlib
import shutil

from . import manifest
from .commit import remove_file, remove_temporaries
from .levels import DISK_LEVELS, GLOBAL_FILE, NODE_LEVELS, STEP_RE, Places
from .reaper import retire


class Ledger:
    """Rank 0's record of the steps committed at each level: read from the manifests once, then
    kept by the commits and retention themselves, so that no save rescans DIR. It errs on the side
    of listing a step: one is entered before its manifest is written and left only once the
    manifest is gone. (One checkpointer writes a directory at a time.)"""

    def __init__(self, places: Places):
        self._places = places
        found = manifest.committed(places)
        self._steps = {level: sorted(s for s, levels in found.items() if level in levels) for level in DISK_LEVELS}

    def uncommit(self, step: int) -> None:
        """Remove every manifest of ``step`` (it is being saved again: they must not vouch for new
        files), known or not; the step's folder stays, made for the new files already."""
        for level, steps in self._steps.items():
            with contextlib.suppress(FileNotFoundError):
                self._places.manifest_path(step, level).unlink()
            if step in steps:
                steps.remove(step)

    def add(self, step: int, level: str) -> None:
        """Enter ``step`` at ``level``, before its manifest is written."""
        if step not in (steps := self._steps[level]):
            bisect.insort(steps, step)

    def discard(self, step: int, level: str) -> None:
        """Forget ``step`` at ``level`` after a failed commit, removing its manifest if it got written."""
        with contextlib.suppress(OSError):
            self._places.manifest_path(step, level).unlink()
        with contextlib.suppress(ValueError):
            self._steps[level].remove(step)

    def retire(self, level: str, keep: int) -> list:
        """Remove the manifests of ``level`` beyond the newest ``keep``; returns their file records,
        which the file holders then delete."""
        steps, dropped = self._steps[level], []
        while len(steps) > keep:
            records = []
            with contextlib.suppress(Exception):  # an unreadable manifest still gets removed
                records = manifest.read(self._places, steps[0], level)["files"]
            remove_file(self._places.manifest_path(steps[0], level))
            steps.pop(0)
            dropped.extend(records)
        return dropped


def retire_files(places: Places, level: str, records: list) -> list:
    """Move the files of dropped steps to the trash (called by their holders: rank 0 for the
    global level, each node's first rank for that node's files); returns the trash paths, for
    the reaper to delete."""
    retired = (retire(places.resolve(level, record["node"], record["path"]), places.root(level, record["node"]))
               for record in records)
    return [path for path in retired if path is not None]


def clean_shared(places: Places) -> None:
    """Rank 0 at start-up: temporaries in DIR, and global-level files with no global manifest."""
    remove_temporaries(places.directory)
    for step in places.steps():
        step_dir = places.step_dir(step)
        if not places.manifest_path(step, "global").exists():
            for path in [*step_dir.glob("rank-*.h5"), step_dir / GLOBAL_FILE]:
                remove_file(path)
        with contextlib.suppress(OSError):
            step_dir.rmdir()


def clean_node(places: Places, node: str) -> None:
    """A node's first rank at start-up: temporaries and uncommitted step folders of its node."""
    root = places.node_root(node)
    remove_temporaries(root)
    for level in NODE_LEVELS:
        for step_dir in (root / level).iterdir() if (root / level).is_dir() else ():
            match = STEP_RE.match(step_dir.name)
            if match and not places.manifest_path(int(match.group(1)), level).exists():
                shutil.rmtree(step_dir, ignore_errors=True)


def is_node_leader(nodes: list, rank: int) -> bool:
    """Whether ``rank`` is its node's first rank (the one that cleans and deletes its node's files)."""
    return nodes.index(nodes[rank]) == rank
