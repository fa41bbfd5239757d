"""Stands for a monitored rank that a launcher kills: maps its progress words, sets them as told,
starts its sentinel, says "ready" and sleeps until killed. Arguments: MONITOR_DIR RANK STEP
ENTERED_MARK COMPLETED_MARK."""

import sys
import time
from pathlib import Path

from hpcrt._src.progress import COMPLETED_MARK, ENTERED_MARK, STEP_WORD, map_progress
from hpcrt._src.sidechannel import MonitorDir, start_sentinel

mdir = MonitorDir(Path(sys.argv[1])).create()
rank, step, entered, completed = (int(a) for a in sys.argv[2:6])
words = map_progress(mdir.progress(rank))
words[STEP_WORD], words[ENTERED_MARK], words[COMPLETED_MARK] = step, entered, completed
sentinel = start_sentinel(rank, mdir)
print("ready", flush=True)
time.sleep(600)
