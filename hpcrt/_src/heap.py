"""Keep freed heap memory in the process (glibc's malloc): large blocks come from the heap
instead of a fresh ``mmap`` each, and the heap top is never handed back, so a collective's new
result array or MPI's own scratch reuses pages already touched rather than page-faulting every
call. The setting MVAPICH applies for the same reason; a no-op where the C library has no
``mallopt``."""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Stop malloc from mmapping large blocks and from trimming the heap; True when it took both."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # -1 reads as the largest size: the heap is never trimmed.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))
