"""Background deletion of retired checkpoint files, off the commit path.

Unlinking a large file is not free (the filesystem frees, and may discard, every block: tens of
milliseconds for a few hundred MiB on ext4 mounted with ``discard``). Retention therefore renames
a retired file into its root's trash folder, which is instant and makes its name free for a step
saved again, and this thread unlinks it later. Trash names end in ``.tmp``: what a crash leaves
there is removed with the other temporaries at the next start-up."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
import uuid
from pathlib import Path
from typing import Iterable, Optional

from hpcrt.checkpoint.files.commit import TMP_SUFFIX

log = logging.getLogger("hpcrt.checkpoint")
TRASH_DIR = ".trash"


def retire(path: Path, root: Path) -> Optional[Path]:
    """Move the regular file ``path`` (never a directory, never what a symbolic link points to)
    into ``root``'s trash under a unique name, and remove its folder once empty; returns the
    trash path, or None when ``path`` did not exist or is not a regular file."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            log.warning("checkpoint retention: %s is not a regular file; left in place", path)
            return None
    except FileNotFoundError:
        return None
    trash = root / TRASH_DIR
    trash.mkdir(exist_ok=True)
    if trash.is_symlink() or not trash.is_dir():
        log.warning("checkpoint retention: %s is not a directory; %s left in place", trash, path)
        return None
    target = trash / f"{uuid.uuid4().hex}{TMP_SUFFIX}"
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    with contextlib.suppress(OSError):
        path.parent.rmdir()
    return target


class Reaper:
    """A thread that unlinks the files handed to it; :meth:`drain` waits until it has."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hpcrt-ckpt-reaper", daemon=True)
        self._thread.start()

    def delete(self, paths: Iterable[Path]) -> None:
        for path in paths:
            self._queue.put(path)

    def drain(self) -> None:
        """Return once every file handed over so far is unlinked."""
        self._queue.join()

    def close(self) -> None:
        """Unlink what is left and stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            path = self._queue.get()
            try:
                if path is None:
                    return
                path.unlink(missing_ok=True)
            except OSError as exc:  # left for the next start-up's cleanup of temporaries
                log.warning("checkpoint retention: deleting %s: %s", path, exc)
            finally:
                self._queue.task_done()
