"""The monitor's side channel outside MPI: small JSON files in the shared run directory.

Why files and not UDP/TCP: the run directory is already on a filesystem every node shares (the
ranks agree on it at init, checkpoints and logs go there), so it needs no ports, addresses or
firewall rules across nodes; it outlives the job, so ``hpcrt diagnose`` reads the same state after
the launcher has killed everything; and each rank only writes its own heartbeat and reads its
ring successor's, so the load is O(1) files per rank per interval. A reader never compares clocks
of two nodes: a heartbeat is stale when its beat counter has not moved for a while by the reader's
own clock. Files are written under a temporary name and renamed, so a reader never sees half of one
(NFS close-to-open consistency then gives it the newest content on every open).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SENTINEL = Path(__file__).with_name("sentinel.py")


class MonitorDir:
    """Where every file of the monitor lives, for the job and for ``hpcrt diagnose``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def create(self) -> "MonitorDir":
        for sub in (self.root, self.heartbeats, self.dumps):
            sub.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def heartbeats(self) -> Path:
        return self.root / "heartbeat"

    @property
    def dumps(self) -> Path:
        return self.root / "dumps"

    @property
    def meta(self) -> Path:
        return self.root / "job.json"

    @property
    def alarm(self) -> Path:
        return self.root / "alarm.json"

    @property
    def stragglers(self) -> Path:
        return self.root / "stragglers.jsonl"

    def heartbeat(self, rank: int) -> Path:
        return self.heartbeats / f"rank-{rank:05d}.json"

    def exit_record(self, rank: int) -> Path:
        return self.heartbeats / f"rank-{rank:05d}.exit.json"

    def dump(self, rank: int) -> Path:
        return self.dumps / f"rank-{rank:05d}.json"

    def raise_alarm(self, alarm: dict) -> bool:
        """Publish the first alarm of the job; returns False when another rank raised one first."""
        tmp = self.root / f".alarm.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(alarm, default=str))
        try:
            os.link(tmp, self.alarm)  # atomic and exclusive, also on NFS
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink()


def start_sentinel(rank: int, mdir: MonitorDir, progress: Path) -> subprocess.Popen:
    """A detached helper that records the moment this process ends, however it ends (even SIGKILL,
    even when the launcher kills the rest of the job right after): it blocks on a pipe whose only
    writer is this process, so end of file means this process is gone. ``progress``: the file of
    this process's progress words, read into the exit record."""
    return subprocess.Popen([sys.executable, "-I", str(SENTINEL), str(rank), str(os.getpid()),
                             str(mdir.exit_record(rank)), str(mdir.heartbeat(rank)), str(progress)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
