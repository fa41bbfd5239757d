"""Small files that anyone may replace. Reading one: a regular file only (never a device, a FIFO or
a directory, which could block or never end), at most a given size, and JSON no deeper than a limit.
Every refusal is a :class:`FileRefused` saying why, for the caller to name the file and go on.
Writing one: under a temporary name, then renamed, so a reader never sees half of it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Optional

MAX_BYTES = 64 << 20
"""Default cap on a file's size: far above any monitor file (a dump of 4096 records is ~1 MB)."""
MAX_DEPTH = 32
"""Default cap on JSON nesting: the monitor's files nest 4 deep."""


class FileRefused(ValueError):
    """A file that is not what it should be; the message says why (without the path)."""


def read_capped(path: Path, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file ``path``, refused when it is anything else or larger than
    ``max_bytes``. It is checked before it is opened (opening a device can have effects), opened
    non-blocking (a FIFO swapped in meanwhile cannot block) and checked again once open."""
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileRefused(f"cannot be read ({exc.strerror})") from None
    _check_regular(before, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileRefused(f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        opened = os.fstat(f.fileno())
        _check_regular(opened, max_bytes)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise FileRefused("was replaced while being opened")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefused(f"grew past {max_bytes} bytes while being read")
    return data


def _check_regular(st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"is not a regular file (it is {_kind(st.st_mode)})")
    if st.st_size > max_bytes:
        raise FileRefused(f"is {st.st_size} bytes, more than the {max_bytes} allowed")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def parse_json(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """JSON (UTF-8) no deeper than ``max_depth``; NaN and infinities are refused too."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise FileRefused(f"nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # also a byte that is not UTF-8
        raise FileRefused(f"is not valid JSON ({exc})") from None
    if _depth_exceeds(value, max_depth):
        raise FileRefused(f"nests deeper than {max_depth} levels")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth_exceeds(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``max_depth`` deep (iteratively: no recursion)."""
    level = [value] if isinstance(value, (list, dict)) else []
    for _ in range(max_depth):
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (list, dict))]
    return bool(level)


def read_json_capped(path: Path, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """:func:`read_capped` then :func:`parse_json`."""
    return parse_json(read_capped(path, max_bytes), max_depth)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[dict]:
    """The file's JSON object, or None when it is missing, unreadable or anything else (read with a
    size cap and never from a device or a FIFO: another rank's file must not hang this one)."""
    try:
        data = read_json_capped(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
