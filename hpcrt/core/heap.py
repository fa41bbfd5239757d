"""Keep freed heap memory in the process (glibc's malloc): large blocks come from the heap instead
of a fresh ``mmap`` each, and freed memory at the heap's top stays until more than a bound is free
there, so a collective's new result array or MPI's own scratch reuses pages already touched rather
than page-faulting every call. A no-op where malloc is not glibc's (musl, macOS, a preloaded
jemalloc or tcmalloc)."""

from __future__ import annotations

import ctypes
from typing import Any, Optional

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEPT: list = []
"""The bound in bytes once this process has set it (the setting lasts as long as the process)."""


def _glibc_mallopt() -> Optional[Any]:
    """glibc's ``mallopt`` when glibc's malloc is the one the process calls, else None."""
    try:
        process, libc = ctypes.CDLL(None), ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version
    except (OSError, AttributeError, TypeError):
        return None
    if ctypes.cast(process.malloc, ctypes.c_void_p).value != ctypes.cast(libc.malloc, ctypes.c_void_p).value:
        return None  # another allocator is interposed; glibc's settings would not reach it
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc.mallopt


def keep_freed_memory(limit_bytes: int) -> bool:
    """Serve large blocks from the heap and hand its top back only once more than ``limit_bytes``
    are free there (then all of it, as glibc trims); True when glibc's malloc took the setting."""
    mallopt = _glibc_mallopt()
    limit = min(limit_bytes, 2**31 - 1)  # mallopt takes a C int
    if mallopt is None or limit <= 0 or not (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, limit)):
        return False
    _KEPT[:] = [limit]
    return True


def heap_kept() -> bool:
    """Whether this process keeps freed memory (set by :func:`keep_freed_memory`, for its lifetime)."""
    return bool(_KEPT)
