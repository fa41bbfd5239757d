"""Stands for a monitored rank that a launcher kills: maps its progress words, sets them as told,
starts its sentinel, says "ready" and sleeps until killed. Arguments: MONITOR_DIR RANK STEP DEPTH."""

import sys
import time
from pathlib import Path

from hpcrt.monitor.progress import DEPTH_WORD, STEP_WORD, map_progress, progress_path
from hpcrt.monitor.sidechannel import MonitorDir, start_sentinel

mdir = MonitorDir(Path(sys.argv[1])).create()
rank, step, depth = (int(a) for a in sys.argv[2:5])
path = progress_path(rank)
words = map_progress(path)
words[STEP_WORD], words[DEPTH_WORD] = step, depth
sentinel = start_sentinel(rank, mdir, path)
print("ready", flush=True)
time.sleep(600)
