"""Retention (keep the last k committed steps per level) and cleanup after a crash.

Deletion order keeps the rule "no manifest, no checkpoint" safe: a step's manifest goes first,
its files after (moved to the trash at once, unlinked by the reaper later); files that no
manifest covers (a save a crash interrupted) are garbage. Only files hpcrt names are ever
deleted, and only inside their own root: every path taken from a manifest is checked first
(:meth:`Places.confined`), and a step folder with a manifest that cannot be read is left alone."""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

from hpcrt.checkpoint.errors import CheckpointError
from hpcrt.checkpoint.files.commit import remove_file, remove_temporaries
from hpcrt.checkpoint.files.levels import (DISK_LEVELS, GLOBAL_FILE_RE, NODE_LEVELS, RANK_FILE_RE, STEP_RE, Places,
                                           step_name)
from hpcrt.checkpoint.files.reaper import TRASH_DIR
from hpcrt.checkpoint.files.reaper import retire
from hpcrt.checkpoint.files.safety import Refused, is_real_dir
from hpcrt.checkpoint.format import manifest

log = logging.getLogger("hpcrt.checkpoint")


class Ledger:
    """Rank 0's record of the steps committed at each level: read from the manifests once, then
    kept by the commits and retention themselves, so that no save rescans DIR. It errs on the side
    of listing a step: one is entered before its manifest is written and left only once the
    manifest is gone. (One checkpointer writes a directory at a time: the directory lock.)"""

    def __init__(self, places: Places):
        self._places = places
        found = manifest.committed(places)
        self._steps = {level: sorted(s for s, levels in found.items() if level in levels) for level in DISK_LEVELS}

    def is_committed(self, step: int) -> bool:
        """Whether some level has a manifest of ``step`` (so a new save must not reuse its file names)."""
        return any(step in steps for steps in self._steps.values())

    def add(self, step: int, level: str) -> bool:
        """Enter ``step`` at ``level``, before its manifest is written; False if it was there already."""
        if step in (steps := self._steps[level]):
            return False
        bisect.insort(steps, step)
        return True

    def discard(self, step: int, level: str) -> None:
        """Forget ``step`` at ``level`` (its manifest is gone)."""
        with contextlib.suppress(ValueError):
            self._steps[level].remove(step)

    def retire(self, level: str, keep: int) -> list:
        """Remove the manifests of ``level`` beyond the newest ``keep``; returns their file records,
        which the file holders then delete (a damaged manifest's files are left: nothing it says
        can be trusted to name them)."""
        steps, dropped = self._steps[level], []
        while len(steps) > keep:
            records = []
            try:
                records = manifest.read(self._places, steps[0], level)["files"]
            except (OSError, CheckpointError) as exc:
                log.warning("checkpoint retention: %s; its files stay", exc)
            try:
                remove_file(self._places.manifest_path(steps[0], level))
            except OSError as exc:  # not a file hpcrt wrote (a directory in its place): left, forgotten
                log.warning("checkpoint retention: %s: %s", self._places.manifest_path(steps[0], level), exc)
            steps.pop(0)
            dropped.extend(records)
        return dropped


def retire_files(places: Places, level: str, records: list) -> list:
    """Move the files of dropped steps (or of a step's superseded save) to the trash (called by
    their holders: rank 0 for the global level, each node's first rank for that node's files);
    returns the trash paths, for the reaper to delete. Records come from manifests read and
    checked by :func:`manifest.read`; each path is confined again here."""
    retired = []
    for record in records:
        try:
            path = places.confined(level, record["node"], record["path"])
        except Refused as exc:
            log.warning("checkpoint retention: %s: %s; left in place", record.get("path"), exc)
            continue
        if (target := retire(path, places.root(level, record["node"]))) is not None:
            retired.append(target)
    return retired


def referenced(places: Places, step: int, level: str, node: Optional[str]) -> Optional[set]:
    """File names in the step's folder of ``level`` (of ``node``'s root) that its manifest lists;
    an empty set without a manifest; None when the manifest cannot be read (then nothing there
    may be deleted)."""
    try:
        doc = manifest.read(places, step, level)
    except FileNotFoundError:
        return set()
    except (OSError, CheckpointError):
        return None
    root = places.root(level, node)
    return {record["path"].rsplit("/", 1)[-1] for record in doc["files"]
            if places.root(level, record["node"]) == root}


def _is_ours(name: str) -> bool:
    return bool(RANK_FILE_RE.match(name) or GLOBAL_FILE_RE.match(name))


def _unreferenced(folder: Path, keep: Optional[set]) -> list:
    """The files hpcrt names in ``folder`` that ``keep`` does not list (none if None)."""
    if keep is None:
        return []
    return [Path(entry.path) for entry in os.scandir(folder)
            if _is_ours(entry.name) and entry.name not in keep and not entry.is_dir(follow_symlinks=False)]


def _remove(paths: list) -> list:
    """Unlink each file (a symbolic link itself, never its target); a folder goes whole, its links unfollowed.
    Returns ``[(path, why)]`` of what resisted removal (a folder that one of those kept is named too)."""
    left: list = []

    def failed(_function: object, path: str, exc_info: tuple) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            left.append((path, exc_info[1].strerror or str(exc_info[1])))

    for path in paths:
        if is_real_dir(path):
            shutil.rmtree(path, onerror=failed)  # never follows a symbolic link
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                left.append((path, exc.strerror))
    return left


def clean_shared(places: Places) -> list:
    """Rank 0 at start-up: temporaries in the folders hpcrt owns in DIR (DIR itself, its step
    folders, the trash), never in a folder of the user's, and global-level files no global
    manifest lists (a save a crash interrupted, or a step's files a newer save replaced).
    Returns what could not be removed (see :func:`remove_temporaries`)."""
    left = remove_temporaries(places.directory, recurse=False)
    left += remove_temporaries(places.directory / TRASH_DIR)
    for step in places.steps():
        left += remove_temporaries(places.step_dir(step), recurse=False)
    for step in places.steps():
        step_dir = places.step_dir(step)
        left += _remove(_unreferenced(step_dir, referenced(places, step, "global", None)))
        with contextlib.suppress(OSError):
            step_dir.rmdir()
    return left


def clean_node(places: Places, node: str) -> list:
    """A node's first rank at start-up: temporaries and :func:`node_leftovers` in its node's
    folder (a real folder, checked private by the caller). Returns what could not be removed."""
    if not is_real_dir(places.node_root(node)):
        return []
    return remove_temporaries(places.node_root(node)) + _remove(node_leftovers(places, node))


def node_leftovers(places: Places, node: str) -> list:
    """In ``node``'s folder: its trash (whole: only the reaper of the job holding DIR's lock uses it,
    and that job cleans before its reaper starts), the step folders of the node levels that no
    manifest covers, and the files hpcrt names there that their step's manifest does not list
    (nothing of a step whose manifest cannot be read). Real folders only, links never followed."""
    trash = places.node_root(node) / TRASH_DIR
    found: list = [trash] if is_real_dir(trash) else []
    for level in NODE_LEVELS:
        level_dir = places.node_root(node) / level
        if not is_real_dir(level_dir):
            continue
        for entry in os.scandir(level_dir):
            match = STEP_RE.match(entry.name)
            if not match or entry.name != step_name(int(match.group(1))) or not entry.is_dir(follow_symlinks=False):
                continue
            keep = referenced(places, int(match.group(1)), level, node)
            found += [Path(entry.path)] if keep == set() else _unreferenced(Path(entry.path), keep)
    return found


def is_node_leader(nodes: list, rank: int) -> bool:
    """Whether ``rank`` is its node's first rank (the one that cleans and deletes its node's files)."""
    return nodes.index(nodes[rank]) == rank
