"""Manifests (the commit record of one step at one level) and the directory marker.

A manifest lists every file of the step at that level (rank, node, relative path, size,
xxh3-128) and every rank's array layout, so a restore can plan which files it needs before
reading any. It is written by rank 0 only after every rank voted success.

Reading one trusts nothing: the file must be a regular file of bounded size, strict UTF-8 JSON
of bounded depth, and every field must have the type and range a manifest written by hpcrt has —
one file per saved rank, each at the one path that rank's file can have. Anything else is a
:class:`ManifestError` naming the file, and that copy of the step does not exist."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Optional

import hpcrt

from hpcrt.checkpoint.errors import CheckpointError, FormatVersionError, NotACheckpointDirectoryError, StateError
from hpcrt.checkpoint.files.commit import write_json_atomic
from hpcrt.checkpoint.files.levels import DISK_LEVELS, Places, check_relative
from hpcrt.checkpoint.files.safety import Refused, read_json
from hpcrt.checkpoint.format.entries import ArrayEntry, check_layouts
from hpcrt.checkpoint.format.hdf5 import FORMAT_NAME, FORMAT_VERSION

MARKER = "hpcrt-checkpoint.json"
MARKER_MAX_BYTES = 1 << 20
MANIFEST_MAX_BYTES = 1 << 30
"""A manifest holds a row per array per rank (about 60 bytes each): 1 GiB is ~16 million rows."""
MAX_WORLD_SIZE = 1 << 24
DIGEST_RE = re.compile(r"^[0-9a-f]{32}$")


class ManifestError(CheckpointError):
    """A manifest that cannot be read or is not what hpcrt writes (the message names it and why)."""


def check_format(document: Any, where: Path, error: type = NotACheckpointDirectoryError) -> None:
    """Raise unless ``document`` is an hpcrt checkpoint document this version can read."""
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise error(f"{where} is not an hpcrt checkpoint file")
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise error(f"{where} has format version {version!r}, which is not a version number")
    if version > FORMAT_VERSION:
        raise FormatVersionError(f"{where} has checkpoint format version {version}; this hpcrt reads "
                                 f"versions up to {FORMAT_VERSION}: upgrade hpcrt to read it")


def read_marker(places: Places) -> dict:
    marker = places.directory / MARKER
    try:
        document = read_json(marker, MARKER_MAX_BYTES)
    except FileNotFoundError:
        raise NotACheckpointDirectoryError(f"{places.directory} is not an hpcrt checkpoint directory "
                                           f"(no {MARKER})") from None
    except (Refused, OSError) as exc:
        raise NotACheckpointDirectoryError(f"{marker} {exc}") from None
    check_format(document, marker)
    return document


def open_directory(places: Places) -> None:
    """Check that DIR is a checkpoint directory this version reads (raises otherwise)."""
    if not places.directory.is_dir():
        raise NotACheckpointDirectoryError(f"{places.directory} does not exist or is not a directory")
    read_marker(places)


def create_directory(places: Places) -> None:
    """Create DIR with its marker, or check an existing one; a non-empty directory without a
    marker is refused so that a checkpointer never writes into someone else's files."""
    directory = places.directory
    marker = directory / MARKER
    if not marker.exists() and not marker.is_symlink():
        if directory.is_dir() and any(directory.iterdir()):
            raise NotACheckpointDirectoryError(f"{directory} exists, is not empty and is not an hpcrt "
                                               f"checkpoint directory (no {MARKER})")
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(marker, {"format": FORMAT_NAME, "format_version": 1})
    open_directory(places)


def build(step: int, level: str, nodes: list, layouts: list, files: list, save: Optional[str] = None) -> dict:
    """The manifest document of ``step`` at ``level``; ``save`` (hex) identifies the save that
    wrote it (levels written by one save agree; a step saved again gets a new one)."""
    packed = any(e.packed for entries in layouts for e in entries)
    return {"format": FORMAT_NAME, "format_version": 2 if packed else 1, "hpcrt_version": hpcrt.__version__,
            "step": step, "level": level, "world_size": len(layouts), "created": time.time(),
            **({"save": save} if save is not None else {}),
            "ranks": [{"rank": r, "node": nodes[r], "arrays": [e.to_json() for e in entries]}
                      for r, entries in enumerate(layouts)],
            "files": files}


def write(places: Places, step: int, level: str, document: dict) -> None:
    write_json_atomic(places.manifest_path(step, level), document, compact=True)


def read(places: Places, step: int, level: str) -> dict:
    """The manifest of ``step`` at ``level``, checked field by field. Raises
    :class:`ManifestError` for a damaged one, :class:`FormatVersionError` for a newer format,
    FileNotFoundError when there is none."""
    path = places.manifest_path(step, level)
    try:
        document = read_json(path, MANIFEST_MAX_BYTES)
        check_format(document, path, ManifestError)
        validate(document, step, level)
    except FileNotFoundError:
        raise
    except (Refused, OSError, ValueError, StateError) as exc:
        raise ManifestError(f"{path} {exc}" if isinstance(exc, Refused) else f"{path}: {exc}") from None
    return document


def save_id(document: dict) -> str:
    """The save that wrote a manifest ("" for manifests from before save ids)."""
    return document.get("save", "")


def _int(value: Any, low: int = 0, high: int = 1 << 62) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def validate(doc: dict, step: int, level: str) -> None:
    """Raise ValueError (or StateError) unless ``doc`` is a manifest of ``step`` at ``level`` as
    hpcrt writes it: fields of the right types, one layout and one file per saved rank, every
    file at the path that rank's file has, layouts that agree and tile each global array."""
    for key, kind in (("step", int), ("level", str), ("world_size", int), ("ranks", list), ("files", list),
                      ("hpcrt_version", str), ("created", (int, float)), ("save", str)):
        if key not in doc and key == "save":
            continue
        if key not in doc:
            raise ValueError(f"has no {key!r}")
        if not isinstance(doc[key], kind) or isinstance(doc[key], bool):
            raise ValueError(f"{key!r} is {type(doc[key]).__name__}, not {getattr(kind, '__name__', 'a number')}")
    if doc["step"] != step or doc["level"] != level:
        raise ValueError(f"is the manifest of step {doc['step']} at level {doc['level']!r}, found as step {step} "
                         f"at level {level!r}")
    size = doc["world_size"]
    if not _int(size, 1, MAX_WORLD_SIZE + 1) or len(doc["ranks"]) != size:
        raise ValueError(f"world size {size} with {len(doc['ranks'])} ranks listed")
    if "save" in doc and not re.match(r"^[0-9a-f]{1,32}$", doc["save"]):
        raise ValueError(f"save id {doc['save'][:40]!r} is not one hpcrt writes")
    for r, rank in enumerate(doc["ranks"]):
        if not isinstance(rank, dict) or not _int(rank.get("rank")) or rank["rank"] != r or \
                not isinstance(rank.get("node"), str) or not isinstance(rank.get("arrays"), list):
            raise ValueError(f"rank entry {r} is not {{rank: {r}, node: name, arrays: [...]}}")
    layouts = layouts_of(doc)
    check_layouts(layouts, [[] for _ in layouts])
    seen: dict = {}
    for record in doc["files"]:
        if not isinstance(record, dict) or set(record) != {"rank", "node", "path", "size", "xxh3_128"}:
            raise ValueError(f"file record {str(record)[:120]} does not have exactly rank, node, path, size, xxh3_128")
        rank, node = record["rank"], record["node"]
        if rank is not None and not _int(rank, 0, size):
            raise ValueError(f"file record of rank {rank!r}, which is not a rank of this world of {size}")
        if (node is None) != (level == "global") or (node is not None and not isinstance(node, str)):
            raise ValueError(f"file record of rank {rank} has node {node!r}, which level {level} does not allow")
        if not _int(record["size"]) or not isinstance(record["xxh3_128"], str) or \
                not DIGEST_RE.match(record["xxh3_128"]):
            raise ValueError(f"file record of rank {rank} has size {record['size']!r} and checksum "
                             f"{str(record['xxh3_128'])[:40]!r}")
        check_relative(level, step, rank, record["path"])
        if rank in seen:
            raise ValueError(f"lists two files of {'the global file' if rank is None else f'rank {rank}'}")
        seen[rank] = record
    missing = [r for r in range(size) if r not in seen]
    if missing:
        raise ValueError(f"lists no file of ranks {missing[:10]}{' …' if len(missing) > 10 else ''}")
    if level == "global" and None not in seen:
        raise ValueError("lists no global file")


def layouts_of(manifest: dict) -> list:
    """Per old rank, its list of :class:`ArrayEntry`."""
    return [[ArrayEntry.from_json(row) for row in rank["arrays"]] for rank in manifest["ranks"]]


def committed(places: Places) -> dict:
    """``{step: [levels]}`` of every manifest in DIR (levels in LEVELS order), in real step
    folders; anything at a manifest's name counts (:func:`read` refuses what is not a regular file)."""
    found = {}
    for step in places.steps():
        levels = [lv for lv in DISK_LEVELS if os.path.lexists(places.manifest_path(step, lv))]
        if levels:
            found[step] = levels
    return found


def catalog(places: Places, step: Optional[int] = None) -> tuple:
    """``({step: {level: manifest}}, [problem, ...])`` of every committed step (or just ``step``):
    a damaged manifest is left out and named in the problems; a manifest of a newer format raises
    :class:`FormatVersionError`; a damaged marker raises :class:`NotACheckpointDirectoryError`."""
    open_directory(places)
    found, problems = {}, []
    for s, levels in manifest_levels(places, step).items():
        for level in levels:
            try:
                found.setdefault(s, {})[level] = read(places, s, level)
            except FileNotFoundError:  # removed meanwhile (retention by a running job)
                pass
            except ManifestError as exc:
                problems.append(str(exc))
    return found, problems


def manifest_levels(places: Places, step: Optional[int] = None) -> dict:
    found = committed(places)
    return found if step is None else {step: found[step]} if step in found else {}
