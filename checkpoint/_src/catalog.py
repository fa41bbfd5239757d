"""Read-only views of a checkpoint directory for the command line: committed steps, per-file
verification, and a description of a step's arrays and levels (no MPI, no hpcrt runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import manifest
from .errors import CheckpointNotFoundError
from .format import file_digest
from .levels import Places


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one file of a manifest: ``ok``, ``missing`` or ``bad`` (with why)."""

    step: int
    level: str
    rank: Optional[int]
    path: str
    status: str
    detail: str = ""


def manifests(places: Places, step: Optional[int] = None) -> dict:
    """``{step: {level: manifest}}`` of every committed step (or just ``step``), oldest first."""
    manifest.open_directory(places)
    found = manifest.committed(places)
    if step is not None:
        if step not in found:
            raise CheckpointNotFoundError(f"{places.directory}: step {step} has no committed checkpoint "
                                          f"(committed: {sorted(found) or 'none'})")
        found = {step: found[step]}
    return {s: {lv: manifest.read(places, s, lv) for lv in levels} for s, levels in sorted(found.items())}


def verify(places: Places, step: Optional[int] = None) -> list:
    """Check every file of every manifest (size and xxh3-128); node-local files are looked for
    under this host's local directory, so run it where they live (or pass their ``--local-dir``)."""
    checks = []
    for s, levels in manifests(places, step).items():
        for level, doc in levels.items():
            for record in doc["files"]:
                path = places.resolve(level, record["node"], record["path"])
                checks.append(FileCheck(s, level, record["rank"], str(path), *_check(path, record)))
    return checks


def _check(path, record: dict) -> tuple:
    if not path.is_file():
        return ("missing", "file not found")
    size, digest = file_digest(path)
    if size != record["size"]:
        return ("bad", f"size {size} bytes, manifest says {record['size']}")
    if digest != record["xxh3_128"]:
        return ("bad", f"xxh3-128 {digest}, manifest says {record['xxh3_128']}")
    return ("ok",)


def describe(places: Places, step: int) -> dict:
    """A step's arrays (key, dtype, global or per-rank shapes, bytes) and levels (files, bytes)."""
    levels = manifests(places, step)[step]
    doc = next(iter(levels.values()))
    layouts = manifest.layouts_of(doc)
    arrays = []
    for i, first in enumerate(layouts[0]):
        column = [entries[i] for entries in layouts]
        arrays.append({"key": first.key, "dtype": str(np.dtype(first.dtype)),
                       "sharded": first.global_shape is not None,
                       "shape": list(first.global_shape) if first.global_shape is not None else
                       [list(e.shape) for e in column],
                       "bytes": sum(e.nbytes for e in column)})
    return {"step": step, "world_size": doc["world_size"], "hpcrt_version": doc["hpcrt_version"],
            "format_version": doc["format_version"], "arrays": arrays,
            "levels": {lv: {"files": len(d["files"]), "bytes": sum(f["size"] for f in d["files"]),
                            "nodes": sorted({f["node"] for f in d["files"] if f["node"]})}
                       for lv, d in levels.items()}}
