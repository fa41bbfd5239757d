"""Run as a detached script (standard library only) by a monitored rank: waits for end of file on
stdin, i.e. for the rank's death, and records when it happened next to the rank's heartbeat."""

import json
import os
import socket
import sys
import time


def main(rank: str, pid: str, exit_record: str, heartbeat: str) -> None:
    while sys.stdin.buffer.read(4096):
        pass
    wall, mono = time.time(), time.monotonic()
    try:
        with open(heartbeat) as f:
            finished = json.load(f).get("state") == "finished"
    except (OSError, ValueError):
        finished = False
    record = {"rank": int(rank), "pid": int(pid), "host": socket.gethostname(), "ended_at": wall,
              "ended_monotonic": mono, "finished": finished}
    tmp = f"{exit_record}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, exit_record)


if __name__ == "__main__":
    main(*sys.argv[1:5])
