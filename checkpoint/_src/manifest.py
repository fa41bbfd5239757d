"""Manifests (the commit record of one step at one level) and the directory marker.

A manifest lists every file of the step at that level (rank, node, relative path, size,
xxh3-128) and every rank's array layout, so a restore can plan which files it needs before
reading any. It is written by rank 0 only after every rank voted success."""

from __future__ import annotations

import json
import time
from pathlib import Path

import hpcrt

from .commit import write_json_atomic
from .errors import FormatVersionError, NotACheckpointDirectoryError
from .format import FORMAT_NAME, FORMAT_VERSION
from .levels import DISK_LEVELS, Places
from .state import ArrayEntry

MARKER = "hpcrt-checkpoint.json"


def check_format(document: dict, where: Path) -> None:
    """Raise unless ``document`` is an hpcrt checkpoint document this version can read."""
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise NotACheckpointDirectoryError(f"{where} is not an hpcrt checkpoint file")
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FormatVersionError(f"{where} has checkpoint format version {version}; this hpcrt reads "
                                 f"versions up to {FORMAT_VERSION}: upgrade hpcrt to read it")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NotACheckpointDirectoryError(f"{path} is not valid JSON ({exc})") from None


def open_directory(places: Places) -> None:
    """Check that DIR is a checkpoint directory this version reads (raises otherwise)."""
    marker = places.directory / MARKER
    if not places.directory.is_dir():
        raise NotACheckpointDirectoryError(f"{places.directory} does not exist")
    if not marker.is_file():
        raise NotACheckpointDirectoryError(f"{places.directory} is not an hpcrt checkpoint directory "
                                           f"(no {MARKER})")
    check_format(_read_json(marker), marker)


def create_directory(places: Places) -> None:
    """Create DIR with its marker, or check an existing one; a non-empty directory without a
    marker is refused so that a checkpointer never writes into someone else's files."""
    directory = places.directory
    if directory.is_dir() and not (directory / MARKER).exists() and any(directory.iterdir()):
        raise NotACheckpointDirectoryError(f"{directory} exists, is not empty and is not an hpcrt "
                                           f"checkpoint directory (no {MARKER})")
    if not (directory / MARKER).exists():
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / MARKER, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION})
    open_directory(places)


def build(step: int, level: str, nodes: list, layouts: list, files: list) -> dict:
    """The manifest document of ``step`` at ``level``."""
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "hpcrt_version": hpcrt.__version__,
            "step": step, "level": level, "world_size": len(layouts), "created": time.time(),
            "ranks": [{"rank": r, "node": nodes[r], "arrays": [e.to_json() for e in entries]}
                      for r, entries in enumerate(layouts)],
            "files": files}


def read(places: Places, step: int, level: str) -> dict:
    path = places.manifest_path(step, level)
    document = _read_json(path)
    check_format(document, path)
    return document


def layouts_of(manifest: dict) -> list:
    """Per old rank, its list of :class:`ArrayEntry`."""
    return [[ArrayEntry.from_json(row) for row in rank["arrays"]] for rank in manifest["ranks"]]


def committed(places: Places) -> dict:
    """``{step: [levels]}`` of every manifest in DIR (levels in LEVELS order)."""
    found = {}
    for step in places.steps():
        levels = [lv for lv in DISK_LEVELS if places.manifest_path(step, lv).is_file()]
        if levels:
            found[step] = levels
    return found
