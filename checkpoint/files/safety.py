"""Reading what anyone may have written, and touching only what is ours.

Every name that becomes a path (from a manifest, the marker, a directory listing) is checked
before it is opened, renamed or deleted: a single safe component where one is expected, the
resolved path inside its root, a regular file where a file is expected, never a symbolic link
that leads out of the root. Small metadata files (the marker, manifests, the lock) are read
capped in size and parsed with a depth limit; a file that is a FIFO, a device or a directory is
refused before it is read, so that nothing blocks or reads forever.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterator

MAX_DEPTH = 16
"""JSON nesting allowed in checkpoint metadata (a manifest nests 5 deep)."""


class Refused(ValueError):
    """A path or a file that is not what it must be; the message says why (without the path)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_regular(st: os.stat_result, max_bytes: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"is not a regular file (it is {_kind(st.st_mode)})")
    if max_bytes is not None and st.st_size > max_bytes:
        raise Refused(f"is {st.st_size} bytes, more than the {max_bytes} allowed")


@contextlib.contextmanager
def open_regular(path: Path, max_bytes: int | None = None) -> Iterator[int]:
    """A read-only descriptor of the regular file ``path`` (not followed if it is a symbolic link;
    opened non-blocking, so that a FIFO swapped in cannot block; checked again once open).
    Raises FileNotFoundError when it is missing, :class:`Refused` when it is anything else."""
    try:
        _check_regular(os.lstat(path), max_bytes)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise Refused(f"cannot be read ({exc.strerror})") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise Refused("is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})") \
            from None
    try:
        _check_regular(os.fstat(fd), max_bytes)
        os.set_blocking(fd, True)
        yield fd
    finally:
        os.close(fd)


def read_capped(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them (else refused)."""
    with open_regular(path, max_bytes) as fd:
        chunks, total = [], 0
        while chunk := os.read(fd, min(max_bytes + 1 - total, 16 << 20) or 1):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise Refused(f"grew past {max_bytes} bytes while being read")
    return b"".join(chunks)


def parse_json(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Strict UTF-8 JSON no deeper than ``max_depth`` (NaN and infinities refused)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(f"is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise Refused(f"nests deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise Refused(f"is not valid JSON ({exc})") from None
    level = [value] if isinstance(value, (list, dict)) else []
    for _ in range(max_depth):
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (list, dict))]
    if level:
        raise Refused(f"nests deeper than {max_depth} levels")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: Path, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    return parse_json(read_capped(path, max_bytes), max_depth)


def is_inside(root: Path, path: Path) -> bool:
    """Whether ``path``, symbolic links resolved, is ``root`` (resolved) or lies below it."""
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def confined_file(root: Path, relative: str) -> Path:
    """``root / relative`` if it stays inside ``root`` once resolved and is not itself a symbolic
    link (it may be missing: the caller reports that); raises :class:`Refused` otherwise."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise Refused(f"path {relative!r} is not a relative path of plain names")
    path = root.joinpath(*parts)
    if os.path.lexists(root) and not is_real_dir(root):
        raise Refused(f"{root} is not a directory (or is a symbolic link)")
    if not is_inside(root, path.parent):
        raise Refused(f"path {relative!r} leads out of {root} through a symbolic link")
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise Refused(f"path {relative!r} is a symbolic link")
    return path


def is_real_dir(path: Path) -> bool:
    """A directory that is not a symbolic link."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_file(path: Path) -> bool:
    """A regular file that is not a symbolic link."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) or check the existing one: a directory, not a symbolic link,
    owned by this user, with no access for others (tightened to 0700 if an older hpcrt made it
    with the default mode); raises :class:`Refused` naming the path and what is wrong."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(f"{path} is {_kind(st.st_mode)}, not a directory of this user's")
    if st.st_uid != os.getuid():
        raise Refused(f"{path} is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700, follow_symlinks=False)
