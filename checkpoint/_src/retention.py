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
    kept by the commits and retention themselves, so that no save rescans DIR."""

    def __init__(self, places: Places):
        self._places = places
        found = manifest.committed(places)
        self._steps = {level: sorted(s for s, levels in found.items() if level in levels) for level in DISK_LEVELS}

    def uncommit(self, step: int) -> None:
        """Remove ``step``'s manifests (it is being saved again: they must not vouch for new files)."""
        for level, steps in self._steps.items():
            if step in steps:
                remove_file(self._places.manifest_path(step, level))
                steps.remove(step)

    def committed(self, step: int, level: str, keep: int) -> list:
        """Record ``step`` as committed at ``level`` and remove the manifests beyond the newest
        ``keep``; returns the removed manifests' file records, which the file holders then delete."""
        steps = self._steps[level]
        if step not in steps:
            bisect.insort(steps, step)
        dropped = []
        while len(steps) > keep:
            old = steps.pop(0)
            with contextlib.suppress(Exception):  # an unreadable manifest still gets removed
                dropped.extend(manifest.read(self._places, old, level)["files"])
            remove_file(self._places.manifest_path(old, level))
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
