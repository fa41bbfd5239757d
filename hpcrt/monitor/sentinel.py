"""Run as a detached script (standard library only) by a monitored rank: waits for end of file on
stdin, i.e. for the rank's death, and records when it happened next to the rank's heartbeat, with
the rank's step and whether it was blocked in a collective, from its progress words."""

import json
import os
import socket
import stat
import struct
import sys
import time


PROGRESS_LAYOUT = "2q"
"""Collective depth, step: the layout of hpcrt/monitor/progress.py."""


def _progress(path: str) -> dict:
    """The rank's last step and whether it was in a collective, from its progress file (then removed)."""
    try:
        with open(path, "rb") as f:
            depth, step = struct.unpack(PROGRESS_LAYOUT, f.read(struct.calcsize(PROGRESS_LAYOUT)))
    except (OSError, struct.error):
        return {}
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return {"step": step, "in_collective": depth > 0}


def _finished(heartbeat: str) -> bool:
    """Whether the rank's last heartbeat says it finished. Only a regular file of at most 1 MiB is
    read, opened non-blocking: a FIFO or a device put in its place cannot keep this helper alive."""
    try:
        with os.fdopen(os.open(heartbeat, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return False
            beat = json.loads(f.read(1 << 20))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(beat, dict) and beat.get("state") == "finished"


def main(rank: str, pid: str, exit_record: str, heartbeat: str, progress: str) -> None:
    while sys.stdin.buffer.read(4096):
        pass
    wall, mono = time.time(), time.monotonic()
    record = {"rank": int(rank), "pid": int(pid), "host": socket.gethostname(), "ended_at": wall,
              "ended_monotonic": mono, "finished": _finished(heartbeat), **_progress(progress)}
    tmp = f"{exit_record}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, exit_record)


if __name__ == "__main__":
    main(*sys.argv[1:6])
