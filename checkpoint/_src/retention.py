"""Retention (keep the last k committed steps per level) and cleanup after a crash.

Deletion order keeps the rule "no manifest, no checkpoint" safe: a step's manifest goes first,
its files after (moved to the trash at once, unlinked by the reaper later); files that no
manifest covers (a save a crash interrupted) are garbage."""

from __future__ import annotations

import contextlib
import shutil

from . import manifest
from .commit import remove_file, remove_temporaries
from .levels import GLOBAL_FILE, NODE_LEVELS, STEP_RE, Places
from .reaper import retire


def uncommit_old(places: Places, level: str, keep: int) -> list:
    """Remove the manifests of ``level`` beyond the newest ``keep`` (rank 0); returns the
    removed manifests' file records, which the file holders then delete."""
    steps = sorted(s for s, levels in manifest.committed(places).items() if level in levels)
    dropped = []
    for step in steps[:max(len(steps) - keep, 0)]:
        with contextlib.suppress(Exception):  # an unreadable manifest still gets removed
            dropped.extend(manifest.read(places, step, level)["files"])
        remove_file(places.manifest_path(step, level))
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
