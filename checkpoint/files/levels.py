"""Where each level keeps its files, and which rank holds each rank's partner copy.

Shared directory (the global level and every manifest)::

    DIR/hpcrt-checkpoint.json                     marker: format name and version
    DIR/step-000000012/manifest-<level>.json      one per committed level
    DIR/step-000000012/rank-00003.h5, global.h5   global level files
    DIR/hpcrt-checkpoint.lock                     held (flock) by the Checkpointer writing DIR

Node-local directory (local and partner levels), one per (virtual) node, in a folder of mode
0700 owned by the user::

    LOCAL/hpcrt-ckpt-<hash of DIR>/<node>/local/step-000000012/rank-00003.h5
    LOCAL/hpcrt-ckpt-<hash of DIR>/<node>/partner/step-000000012/rank-00001.h5   (held for rank 1)

A step saved again while it is committed gets files under new names (``rank-00003.<tag>.h5``,
``global.<tag>.h5``): the committed files stay untouched until the new manifest replaces theirs.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import xxhash

from hpcrt.checkpoint.files.safety import Refused, confined_file, is_real_dir

LEVELS = ("memory", "local", "partner", "global")
DISK_LEVELS = ("local", "partner", "global")
NODE_LEVELS = ("local", "partner")
GLOBAL_FILE = "global.h5"
STEP_RE = re.compile(r"^step-(\d+)$")
RANK_FILE_RE = re.compile(r"^rank-(\d{5,})(?:\.([0-9a-f]{1,32}))?\.h5$")
GLOBAL_FILE_RE = re.compile(r"^global(?:\.([0-9a-f]{1,32}))?\.h5$")


def default_local_dir() -> Path:
    """``$SLURM_TMPDIR`` (node-local on Slurm clusters), else the system temporary directory."""
    return Path(os.environ.get("SLURM_TMPDIR") or tempfile.gettempdir())


def step_name(step: int) -> str:
    return f"step-{step:09d}"


def rank_name(rank: int, tag: str = "") -> str:
    """A rank file's name; ``tag`` names the files of a save of a step that is committed already."""
    return f"rank-{rank:05d}.{tag}.h5" if tag else f"rank-{rank:05d}.h5"


def global_name(tag: str = "") -> str:
    return f"global.{tag}.h5" if tag else GLOBAL_FILE


def safe_node(node: str) -> str:
    """A node name as one safe path component (the same for every name a job can have)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", node)
    return "_" + name if name in ("", ".", "..") else name


def check_relative(level: str, step: int, rank: Optional[int], relative: object) -> str:
    """``relative`` if it is the path a file of ``rank`` (None: the global file) at ``level`` of
    ``step`` can have — ``[level/]step-N/rank-R[.tag].h5`` or ``step-N/global[.tag].h5`` —
    else raises ValueError. Nothing else a manifest says ever becomes a path."""
    if not isinstance(relative, str):
        raise ValueError(f"file path {relative!r} is not a string")
    parts = relative.split("/")
    prefix = [] if level == "global" else [level]
    if len(parts) != len(prefix) + 2 or parts[:len(prefix)] != prefix or parts[-2] != step_name(step):
        raise ValueError(f"file path {relative!r} is not a file of step {step} at level {level}")
    if rank is None:
        ok = level == "global" and GLOBAL_FILE_RE.match(parts[-1])
    else:
        match = RANK_FILE_RE.match(parts[-1])
        ok = match and int(match.group(1)) == rank and parts[-1] == rank_name(rank, match.group(2) or "")
    if not ok:
        whose = "the global file" if rank is None else f"rank {rank}'s file"
        raise ValueError(f"file path {relative!r} is not the name of {whose}")
    return relative


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
        return self.local_root / safe_node(node)

    @staticmethod
    def relative(level: str, step: int, rank: int, tag: str = "") -> str:
        """A rank file's path relative to its level's root (the node root or DIR)."""
        prefix = "" if level == "global" else level + "/"
        return f"{prefix}{step_name(step)}/{rank_name(rank, tag)}"

    def root(self, level: str, node: Optional[str]) -> Path:
        """The folder a level's relative paths start from: DIR, or the node's root."""
        return self.directory if level == "global" else self.node_root(node)

    def resolve(self, level: str, node: Optional[str], relative: str) -> Path:
        return self.root(level, node) / relative

    def confined(self, level: str, node: Optional[str], relative: str) -> Path:
        """:meth:`resolve` for a path read from a manifest: the node-local roots must be real
        folders, and the path must stay inside its root (raises ``safety.Refused``)."""
        if level != "global":
            if not isinstance(node, str):
                raise Refused(f"node {node!r} is not a name")
            if os.path.lexists(self.local_root) and not is_real_dir(self.local_root):
                raise Refused(f"{self.local_root} is not a directory (or is a symbolic link)")
        return confined_file(self.root(level, node), relative)

    def steps(self) -> list:
        """Step numbers that have a folder in DIR (a real one, named as hpcrt names them), oldest first."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return []
        found = []
        for entry in entries:
            m = STEP_RE.match(entry.name)
            if m and entry.name == step_name(int(m.group(1))):
                try:
                    if stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode):
                        found.append(int(m.group(1)))
                except OSError:
                    pass
        return sorted(found)


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
