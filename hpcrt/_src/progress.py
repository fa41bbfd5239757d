"""A rank's progress in three 8-byte words of a small file mapped shared, which the rank's sentinel
reads after the rank is gone (even after SIGKILL: the kernel keeps the mapped page), so that every
exit record says whether its rank was blocked in a collective when it ended, and at which step.

The words: the entered mark (the recorder's record count just after the newest collective entered),
the completed mark (the record count when the newest collective completed) and the step. The rank
was in a collective iff entered > completed. Plain stores, no read-modify-write, keep the hot path
cheap; a nested collective's end clears the mark until its caller's next one."""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

ENTERED_MARK, COMPLETED_MARK, STEP_WORD = range(3)
"""The words' indices (the recorder writes the marks at literal 0 and 1, its hot path)."""
LAYOUT = "3q"
"""The words as :mod:`struct` reads them (native int64); the sentinel, stdlib only, keeps a copy."""
SIZE = struct.calcsize(LAYOUT)


def map_progress(path: Path) -> memoryview:
    """A zeroed mapping of ``path`` as three writable int64 words. It stays mapped until the
    process ends, so the words are current however the process ends."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, SIZE)
        mapping = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    return memoryview(mapping).cast("q")
