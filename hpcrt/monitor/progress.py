"""A rank's progress in two 8-byte words of a small file mapped shared, which the rank's sentinel
reads after the rank is gone (even after SIGKILL: the kernel keeps the mapped page), so that every
exit record says whether its rank was blocked in a collective when it ended, and at which step.

The words: the collective depth (traced collectives entered and not completed) and the step,
written with plain stores on the hot path. The file is node-local (``/dev/shm`` where there is
one): the sentinel runs on the same node, and stores into a page of a network filesystem would
fault again after every writeback. The sentinel deletes it once read."""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from pathlib import Path

DEPTH_WORD, STEP_WORD = range(2)
"""The words' indices (the recorder writes the depth at literal 0, its hot path)."""
LAYOUT = "2q"
"""The words as :mod:`struct` reads them (native int64); the sentinel, stdlib only, keeps a copy."""
SIZE = struct.calcsize(LAYOUT)


def progress_path(rank: int) -> Path:
    """Where this process keeps its words: node-local, one file per process."""
    shm = Path("/dev/shm")
    folder = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return folder / f"hpcrt-progress-rank{rank}-{os.getpid()}.bin"


def map_progress(path: Path) -> memoryview:
    """A zeroed mapping of ``path`` as writable int64 words. It stays mapped until the process
    ends, so the words are current however the process ends."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, SIZE)
        mapping = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    return memoryview(mapping).cast("q")
