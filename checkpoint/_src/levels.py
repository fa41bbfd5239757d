"""Where each level keeps its files, and which rank holds each rank's partner copy.

Shared directory (the global level and every manifest)::

    DIR/hpcrt-checkpoint.json                     marker: format name and version
    DIR/step-000000012/manifest-<level>.json      one per committed level
    DIR/step-000000012/rank-00003.h5, global.h5   global level files

Node-local directory (local and partner levels), one per (virtual) node::

    LOCAL/hpcrt-ckpt-<hash of DIR>/<node>/local/step-000000012/rank-00003.h5
    LOCAL/hpcrt-ckpt-<hash of DIR>/<node>/partner/step-000000012/rank-00001.h5   (held for rank 1)
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import xxhash

LEVELS = ("memory", "local", "partner", "global")
DISK_LEVELS = ("local", "partner", "global")
NODE_LEVELS = ("local", "partner")
GLOBAL_FILE = "global.h5"
STEP_RE = re.compile(r"^step-(\d+)$")


def default_local_dir() -> Path:
    """``$SLURM_TMPDIR`` (node-local on Slurm clusters), else the system temporary directory."""
    return Path(os.environ.get("SLURM_TMPDIR") or tempfile.gettempdir())


def step_name(step: int) -> str:
    return f"step-{step:09d}"


def rank_name(rank: int) -> str:
    return f"rank-{rank:05d}.h5"


@dataclass(frozen=True)
class Places:
    """The directories of one checkpoint directory's levels."""

    directory: Path
    local_root: Path

    @classmethod
    def of(cls, directory: str | os.PathLike, local_dir: Optional[str | os.PathLike] = None) -> "Places":
        directory = Path(directory).resolve()
        key = xxhash.xxh64_hexdigest(str(directory).encode())
        base = Path(local_dir) if local_dir is not None else default_local_dir()
        return cls(directory, base.resolve() / f"hpcrt-ckpt-{key}")

    def step_dir(self, step: int) -> Path:
        return self.directory / step_name(step)

    def manifest_path(self, step: int, level: str) -> Path:
        return self.step_dir(step) / f"manifest-{level}.json"

    def node_root(self, node: str) -> Path:
        return self.local_root / re.sub(r"[^A-Za-z0-9_.-]", "_", node)

    @staticmethod
    def relative(level: str, step: int, rank: int) -> str:
        """A rank file's path relative to its level's root (the node root or DIR)."""
        prefix = "" if level == "global" else level + "/"
        return f"{prefix}{step_name(step)}/{rank_name(rank)}"

    def root(self, level: str, node: Optional[str]) -> Path:
        """The folder a level's relative paths start from: DIR, or the node's root."""
        return self.directory if level == "global" else self.node_root(node)

    def resolve(self, level: str, node: Optional[str], relative: str) -> Path:
        return self.root(level, node) / relative

    def steps(self) -> list:
        """Step numbers that have a directory in DIR, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := STEP_RE.match(p.name)))


def partner_holders(nodes: list) -> Optional[list]:
    """``holders[r]``: the rank that keeps rank r's partner copy — the rank with the same local
    index (modulo its node's size) on the next node; None on a single node."""
    order = list(dict.fromkeys(nodes))
    if len(order) < 2:
        return None
    members = {node: [r for r, n in enumerate(nodes) if n == node] for node in order}
    holders = []
    for rank, node in enumerate(nodes):
        peers = members[order[(order.index(node) + 1) % len(order)]]
        holders.append(peers[members[node].index(rank) % len(peers)])
    return holders
