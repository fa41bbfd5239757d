"""A rank's dump: its flight recorder, what it has in flight and the Python stack of every thread,
written to the run directory when a hang or death is detected anywhere in the job."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path
from time import perf_counter

from hpcrt.core.files import write_json
from hpcrt.monitor.recorder import FlightRecorder


def thread_stacks() -> list:
    """Every thread's name, whether it is the main thread, and its stack (innermost frame last)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    main = threading.main_thread().ident
    return [{"thread": names.get(ident, str(ident)), "main": ident == main,
             "stack": traceback.format_stack(frame)} for ident, frame in sys._current_frames().items()]


def write_dump(path: Path, rank: int, node: str, recorder: FlightRecorder, reason: str) -> None:
    """Write this rank's dump atomically; records keep ``perf_counter`` times, ``wall_offset`` maps
    them to wall-clock time."""
    write_json(path, {
        "rank": rank, "node": node, "pid": os.getpid(), "reason": reason, "time": time.time(),
        "wall_offset": time.time() - perf_counter(), "step": recorder.step,
        "comms": [{k: v for k, v in label.items() if k != "key"} for label in recorder.comm_labels],
        "counts": recorder.counts_by_label(), "records": recorder.records(), "stacks": thread_stacks(),
    })
