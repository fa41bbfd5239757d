"""Opening a checkpoint directory for writing: rank 0 creates or checks DIR, takes its lock and
cleans what a crash left there; each node's first rank makes or checks its private node-local
folder and cleans it. Every rank learns every failure in the same collective."""

from __future__ import annotations

import logging
from typing import Optional

from hpcrt.checkpoint.errors import CheckpointError
from hpcrt.checkpoint.files import retention
from hpcrt.checkpoint.files.levels import NODE_LEVELS, Places
from hpcrt.checkpoint.files.lock import DirectoryLock
from hpcrt.checkpoint.files.safety import Refused, is_real_dir, private_dir
from hpcrt.checkpoint.format import manifest
from hpcrt.checkpoint.save.collective import Collectives

log = logging.getLogger("hpcrt.checkpoint")


def open_directory(coll: Collectives, places: Places, lock: DirectoryLock, nodes: list,
                   levels: tuple) -> Optional[retention.Ledger]:
    """Collective: open DIR and the node folders (raising the same error on every rank); returns
    rank 0's :class:`retention.Ledger` (None on the other ranks)."""
    error, ledger = None, None
    if coll.rank == 0:
        try:
            manifest.create_directory(places)
            if lock.acquire():
                _warn_left(retention.clean_shared(places))
            else:
                log.warning("checkpoint directory %s is read-only: opened without the lock and without "
                            "start-up cleanup; saves there will fail", places.directory)
            ledger = retention.Ledger(places)
        except CheckpointError as exc:
            error = exc
        except Exception as exc:  # whatever rank 0 trips on, every rank learns it below
            error = CheckpointError(f"checkpoint directory {places.directory}: {type(exc).__name__}: {exc}")
    error = coll.bcast(error, "ckpt_open_directory")
    if error is not None:
        raise error
    problem = None
    if retention.is_node_leader(nodes, coll.rank):
        problem = _open_node_folder(places, nodes[coll.rank], any(lv in levels for lv in NODE_LEVELS))
    problems = [p for p in coll.allgather(problem, "ckpt_open_local") if p]
    if problems:
        raise CheckpointError("; ".join(problems))
    return ledger


def _open_node_folder(places: Places, node: str, uses_node_levels: bool) -> Optional[str]:
    """Make (or check) this node's private folder and clean it; an error message, or None."""
    root, node_root = places.local_root, places.node_root(node)
    try:
        if uses_node_levels:
            private_dir(root)
            private_dir(node_root)
        elif not is_real_dir(node_root):  # nothing of ours to clean
            return None
        else:
            private_dir(root)
        _warn_left(retention.clean_node(places, node))
    except Refused as exc:
        message = (f"node-local checkpoint folder on {node}: {exc}; refusing to write or delete anything "
                   "there (pass another local_dir=)")
        if uses_node_levels:
            return message
        log.warning("checkpoint: %s", message)
    except OSError as exc:
        if uses_node_levels:
            return f"node-local checkpoint folder {root} on {node}: {exc}"
        log.warning("checkpoint: cleaning %s: %s", node_root, exc)
    return None


def _warn_left(left: list) -> None:
    for path, why in left:
        log.warning("checkpoint start-up cleanup: %s left in place (%s)", path, why)
