"""Read-only views of a checkpoint directory for the command line: committed steps, per-file
verification, and a description of a step's arrays and levels (no MPI, no hpcrt runtime).

Nothing here trusts the directory: manifests are read with :func:`manifest.read` (capped,
depth-limited, checked field by field), a damaged one is left out and named in the returned
problems, and every file a manifest names is confined to its root and opened only if it is a
regular file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import h5py
import numpy as np

from hpcrt.checkpoint.errors import CheckpointNotFoundError, FormatVersionError
from hpcrt.checkpoint.files.levels import Places
from hpcrt.checkpoint.files.safety import Refused
from hpcrt.checkpoint.format import manifest
from hpcrt.checkpoint.format.hdf5 import check_rank_file, file_digest


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one file of a manifest: ``ok``, ``missing`` or ``bad`` (with why)."""

    step: int
    level: str
    rank: Optional[int]
    path: str
    status: str
    detail: str = ""


def manifests(places: Places, step: Optional[int] = None) -> tuple:
    """``({step: {level: manifest}}, [problem, ...])`` of every committed step (or just
    ``step``), oldest first; a damaged manifest, or one of a newer format, is a problem (one
    line naming the file) and left out. Raises for a directory that is not a checkpoint
    directory, or when ``step`` has no readable manifest."""
    manifest.open_directory(places)
    found, problems = {}, []
    for s, levels in manifest.manifest_levels(places, step).items():
        for level in levels:
            try:
                found.setdefault(s, {})[level] = manifest.read(places, s, level)
            except FileNotFoundError:
                pass
            except (FormatVersionError, manifest.ManifestError) as exc:
                if step is not None and len(levels) == 1:
                    raise
                problems.append(str(exc))
    if step is not None and step not in found:
        committed = sorted(manifest.committed(places))
        raise CheckpointNotFoundError(f"{places.directory}: step {step} has no committed checkpoint "
                                      f"(committed: {committed or 'none'})" + "".join(f"; {p}" for p in problems))
    return dict(sorted(found.items())), problems


def verify(places: Places, step: Optional[int] = None) -> tuple:
    """``([FileCheck], [problem])``: every file of every readable manifest checked (size and
    xxh3-128, then, for a rank file, its step, rank and arrays against the manifest); node-local
    files are looked for under this host's local directory, so run it where they live (or pass
    their ``--local-dir``)."""
    found, problems = manifests(places, step)
    checks = []
    for s, levels in found.items():
        for level, doc in levels.items():
            layouts = manifest.layouts_of(doc)
            for record in doc["files"]:
                try:
                    path = places.confined(level, record["node"], record["path"])
                except Refused as exc:
                    checks.append(FileCheck(s, level, record["rank"], record["path"], "bad", str(exc)))
                    continue
                checks.append(FileCheck(s, level, record["rank"], str(path),
                                        *_check(path, record, s, layouts)))
    return checks, problems


def _check(path, record: dict, step: int, layouts: list) -> tuple:
    try:
        size, digest = file_digest(path)
    except FileNotFoundError:
        return ("missing", "file not found")
    except (Refused, OSError) as exc:
        return ("bad", str(exc))
    if size != record["size"]:
        return ("bad", f"size {size} bytes, manifest says {record['size']}")
    if digest != record["xxh3_128"]:
        return ("bad", f"xxh3-128 {digest}, manifest says {record['xxh3_128']}")
    if record["rank"] is not None:
        try:
            with h5py.File(path, "r") as f:
                check_rank_file(f, layouts[record["rank"]], step, len(layouts), record["rank"])
        except Exception as exc:  # a file whose checksum matches but that contradicts its manifest
            return ("bad", f"contradicts its manifest: {exc}")
    return ("ok",)


def describe(places: Places, step: int) -> tuple:
    """``(info, problems)``: a step's arrays (key, dtype, global or per-rank shapes, bytes) and
    levels (files, bytes)."""
    found, problems = manifests(places, step)
    levels = found[step]
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
    info = {"step": step, "world_size": doc["world_size"], "hpcrt_version": doc["hpcrt_version"],
            "format_version": doc["format_version"], "arrays": arrays,
            "levels": {lv: {"files": len(d["files"]), "bytes": sum(f["size"] for f in d["files"]),
                            "nodes": sorted({f["node"] for f in d["files"] if f["node"]})}
                       for lv, d in levels.items()}}
    return info, problems
