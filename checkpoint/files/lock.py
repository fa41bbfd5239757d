"""One writer per checkpoint directory: ``DIR/hpcrt-checkpoint.lock``.

Rank 0 of a :class:`Checkpointer` holds an exclusive ``flock`` on the lock file for the
checkpointer's lifetime and writes its host and pid into it. The kernel drops the lock when the
process ends, however it ends, so a crashed holder never leaves the directory locked; the file
itself stays (only its lock counts). On a filesystem without ``flock`` (Lustre mounted without
``-o flock``), the file's existence is the lock: a holder on the same host whose pid is gone is
stale and is taken over; one on another host is named in the error, to be removed by hand if
that job is gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Optional

from hpcrt.checkpoint.errors import CheckpointError
from hpcrt.checkpoint.files.safety import Refused, open_regular, parse_json

LOCK_NAME = "hpcrt-checkpoint.lock"
MAX_BYTES = 4096
NO_FLOCK = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


class DirectoryLockedError(CheckpointError):
    """Another Checkpointer (named by host and pid) writes this checkpoint directory."""


class DirectoryLock:
    """The lock of one checkpoint directory; :meth:`acquire` raises :class:`DirectoryLockedError`."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_NAME
        self._fd: Optional[int] = None
        self._owns_file = False  # the no-flock protocol: release removes the file

    def acquire(self) -> bool:
        """Take the lock; False (and no lock) when the directory is read-only for this user, so
        that nobody can write it through this process either."""
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES) and not os.access(self.path.parent, os.W_OK):
                return False
            raise CheckpointError(f"checkpoint lock {self.path}: cannot be opened ({exc.strerror}); it must be a "
                                  "regular file this user can write") from None
        try:
            if not _is_regular(fd):
                raise CheckpointError(f"checkpoint lock {self.path} is not a regular file; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DirectoryLockedError(self._held_message(_holder(self.path))) from None
            except OSError as exc:
                if exc.errno not in NO_FLOCK:
                    raise CheckpointError(f"checkpoint lock {self.path}: {exc.strerror}") from None
                self._acquire_without_flock(fd, me)
                return True
            _write(fd, me)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def _acquire_without_flock(self, fd: int, me: dict) -> None:
        """The filesystem has no flock: the file's content is the lock."""
        holder = _holder(self.path)
        if holder and not _stale(holder):
            raise DirectoryLockedError(self._held_message(holder) + " (this filesystem has no flock: if that job is "
                                       f"gone, remove {self.path})")
        _write(fd, me)
        self._fd, self._owns_file = fd, True

    def _held_message(self, holder: Optional[dict]) -> str:
        who = (f"host {holder.get('host')}, pid {holder.get('pid')}" if holder else "a process that has not "
               "written its name yet")
        since = holder.get("since") if holder else None
        when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" \
            if isinstance(since, (int, float)) and not isinstance(since, bool) else ""
        elsewhere = "" if not holder or holder.get("host") == socket.gethostname() else (
            f"; if host {holder.get('host')} crashed, its lock may outlive it on a network filesystem: remove the "
            "lock file once that job is surely gone")
        return (f"checkpoint directory {self.path.parent} is in use by another Checkpointer ({who}{when}, lock "
                f"{self.path}): two writers would delete each other's checkpoints; close() the other one first"
                + elsewhere)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._owns_file and (_holder(self.path) or {}).get("pid") == os.getpid():
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the flock


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _write(fd: int, me: dict) -> None:
    data = json.dumps(me).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _holder(path: Path) -> Optional[dict]:
    """The holder's ``{"host", "pid", "since"}`` as written in the lock file, or None."""
    try:
        with open_regular(path, MAX_BYTES) as fd:
            data = os.pread(fd, MAX_BYTES, 0)
        holder = parse_json(data, 2)
    except (OSError, Refused):
        return None
    return holder if isinstance(holder, dict) else None


def _stale(holder: dict) -> bool:
    """A holder on this host whose process is gone (on another host nothing can be told)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
