"""``hpcrt ckpt gc DIR``: the node-local copies of DIR that nothing needs any more.

A job's local and partner levels live in ``LOCAL/hpcrt-ckpt-<hash of DIR>/<node>/`` on each node
(:mod:`hpcrt.checkpoint.files.levels`). What a killed job, retention cut short or a deleted DIR
leaves there stays until a Checkpointer opens DIR again on that node. gc finds, in that one
folder on the machine it runs on, what no committed manifest of DIR references (step folders and
files no manifest lists, temporaries, the trash) and removes it, or only lists it (dry run).
It holds DIR's lock meanwhile: while a live job holds it, nothing is touched. A DIR this host
does not see is refused unless the user says it was deleted: a file system not mounted here
looks the same, and the node folder may be a live job's. Nothing outside that folder is ever
touched; a symbolic link is refused, never followed, never removed."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from hpcrt.checkpoint.errors import CheckpointError
from hpcrt.checkpoint.files import retention
from hpcrt.checkpoint.files.commit import TMP_SUFFIX
from hpcrt.checkpoint.files.levels import Places, safe_node
from hpcrt.checkpoint.files.lock import DirectoryLock, DirectoryLockedError
from hpcrt.checkpoint.files.safety import is_real_dir
from hpcrt.checkpoint.format import manifest


@dataclass
class Collected:
    """What gc removed (or, in a dry run, would remove), what it refused and why, and why it
    touched nothing (``held``: DIR is in use), if so."""

    folder: Path
    removed: list = field(default_factory=list)
    refused: list = field(default_factory=list)
    held: Optional[str] = None


def collect(places: Places, dry_run: bool, dir_removed: bool = False) -> Collected:
    """Remove (unless ``dry_run``) the leftovers of ``places.directory`` in its node-local folder;
    a DIR that does not exist here is refused (CheckpointError) unless ``dir_removed``."""
    if not dir_removed and not os.path.lexists(places.directory):
        raise CheckpointError(f"{places.directory} does not exist on this host; its node-local copies may be a "
                              f"live job's (a file system not mounted here, another mount path): nothing removed; "
                              f"pass --dir-removed if DIR was deleted")
    done = Collected(places.local_root)
    root = places.local_root
    if not os.path.lexists(root):
        return done
    if not is_real_dir(root) or os.lstat(root).st_uid != os.getuid():
        done.refused.append((root, "is a symbolic link, not a folder, or not this user's"))
        return done
    with _held(places) as held:
        if held is not None:
            done.held = held
            return done
        for entry in os.scandir(root):
            node_root = Path(entry.path)
            if not is_real_dir(node_root) or safe_node(entry.name) != entry.name:
                done.refused.append((node_root, "is not a node folder hpcrt makes (a symbolic link?)"))
                continue
            leftovers = retention.node_leftovers(places, entry.name)
            done.removed += sorted(leftovers + list(_temporaries(node_root, outside=leftovers)))
            if not dry_run:
                done.refused += retention.clean_node(places, entry.name)  # what resisted removal, and why
        if not dry_run:
            _remove_empty_folders(root)
    return done


@contextlib.contextmanager
def _held(places: Places) -> Iterator[Optional[str]]:
    """Hold DIR's lock for the block; yields why not (a live job holds it, or DIR is read-only),
    else None. A DIR the user says is deleted has no job: its node folder is all leftovers."""
    if not os.path.lexists(places.directory):
        yield None
        return
    manifest.open_directory(places)  # an existing DIR must be a checkpoint directory (raises otherwise)
    lock = DirectoryLock(places.directory)
    try:
        acquired = lock.acquire()
    except DirectoryLockedError as exc:
        yield str(exc)
        return
    except CheckpointError as exc:
        yield f"its lock cannot be taken: {exc}"
        return
    try:
        yield None if acquired else f"{places.directory} is read-only: whether a job uses it cannot be told"
    finally:
        lock.release()


def _temporaries(node_root: Path, outside: list) -> Iterator[Path]:
    """Every ``*.tmp`` file (or link) below ``node_root`` but not in a folder of ``outside`` (listed whole
    already), links never followed."""
    for folder, subfolders, files in os.walk(node_root):
        subfolders[:] = [name for name in subfolders if Path(folder) / name not in outside]
        yield from (Path(folder) / name for name in files if name.endswith(TMP_SUFFIX))


def _remove_empty_folders(root: Path) -> None:
    """Remove the folders below ``root``, and ``root``, that are empty now (rmdir only)."""
    for folder, _, _ in os.walk(root, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(folder)
