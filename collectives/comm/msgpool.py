"""Message buffers reused across calls, one pool per array backend.

A fresh buffer per message costs more than its copy on the host: glibc serves large blocks with
``mmap``, so every call faults the pages of its buffers in (and zeroes them) again. The schedules
take their message buffers here and give them back once their sends and receives are done."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from hpcrt.backends.staging import PinnedPool

POOL_BYTES = 512 << 20
"""At most this many free bytes kept per backend; a larger demand still gets buffers, unpooled."""
_POOLS: dict = {}
_LOCK = threading.Lock()


def message_pool(xp: Any) -> PinnedPool:
    """The pool of uint8 message buffers on backend ``xp`` (numpy, cupy or the fake GPU)."""
    entry = _POOLS.get(id(xp))  # by identity: a backend namespace need not be hashable
    if entry is None:
        with _LOCK:
            pool = PinnedPool(POOL_BYTES, lambda nbytes: xp.empty(nbytes, dtype=np.uint8))
            entry = _POOLS.setdefault(id(xp), (xp, pool))  # holding xp keeps its id from being reused
    return entry[1]


class Borrowed:
    """The buffers one call takes from a pool, all returned at once by :meth:`give_back`."""

    def __init__(self, xp: Any):
        self._pool = message_pool(xp)
        self._taken: list = []

    def take(self, nbytes: int) -> Any:
        """A uint8 buffer of exactly ``nbytes`` (a view of a pooled one)."""
        raw = self._pool.acquire(max(nbytes, 1))
        self._taken.append(raw)
        return raw[:nbytes]

    def give_back(self) -> None:
        """Return every buffer taken; the caller must be done with all of them."""
        for raw in self._taken:
            self._pool.release(raw)
        self._taken.clear()
