"""Durable, atomic file creation: write under a temporary name, fsync, rename, fsync the directory.

A reader sees either no file or the complete file; after a crash only ``*.tmp`` files remain,
which :func:`remove_temporaries` cleans."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

log = logging.getLogger("hpcrt.checkpoint")

TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(directory: Path) -> None:
    """Create ``directory`` and its missing parents, fsyncing the parent of each one created: a
    file fsynced in a new folder survives a crash only if the folder's own name does too."""
    if directory.is_dir():
        return
    make_dirs_durable(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:  # another rank or thread made it meanwhile: its creator syncs the parent
        return
    fsync_dir(directory.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, before_rename: Optional[Callable[[], None]] = None,
                sync_dir: bool = True, fsynced: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it is fsynced and renamed
    into place and the directory fsynced; on error the temporary is removed. ``before_rename``
    runs between the fsync and the rename (fault-injection tests kill a rank there).
    ``sync_dir=False`` leaves the directory fsync to the caller's next file in the same directory
    (one fsync makes both renames durable). ``fsynced=True``: the caller fsyncs the file itself."""
    make_dirs_durable(path.parent)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        yield tmp
        if not fsynced:
            fsync_file(tmp)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:  # after the rename the new content is in place: a failed sync must not undo it
        try:
            fsync_dir(path.parent)
        except OSError as exc:
            log.warning("%s is in place, but its directory could not be synced (a crash may lose the "
                        "rename): %s", path, exc)


def write_json_atomic(path: Path, document: dict, compact: bool = False) -> None:
    text = json.dumps(document, separators=(",", ":")) if compact else json.dumps(document, indent=1)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_file(path: Path) -> None:
    """Unlink ``path`` if it exists and try to remove its directory once empty."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def remove_temporaries(root: Path, recurse: bool = True) -> list:
    """Delete every ``*.tmp`` file under ``root`` (left by a crash mid-write; only in ``root``
    itself unless ``recurse``), never following a symbolic link and never failing: what cannot be
    removed (a directory named ``*.tmp``, a file that resists) is left in place; returns
    ``[(path, why)]`` of those, for a warning."""
    left: list = []
    if not root.is_dir() or root.is_symlink():
        return left

    def failed(exc: OSError) -> None:
        if not isinstance(exc, FileNotFoundError):
            left.append((exc.filename, exc.strerror))

    for folder, dirs, files in os.walk(root, onerror=failed):
        if not recurse:
            dirs.clear()
        for name in [d for d in dirs if d.endswith(TMP_SUFFIX)]:
            dirs.remove(name)  # never walked into
            path = os.path.join(folder, name)
            if os.path.islink(path):
                files.append(name)
            else:
                left.append((path, "a directory, not a file hpcrt writes"))
        for name in files:  # symbolic links included (the link is removed, never its target)
            if name.endswith(TMP_SUFFIX):
                try:
                    os.unlink(os.path.join(folder, name))
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    left.append((os.path.join(folder, name), exc.strerror))
    return left
