"""Per-link byte accounting: every byte an hpcrt collective sends is recorded against its
(source, destination) pair of world ranks, so tests can check a schedule exactly."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from typing import Iterator


class LinkBytes:
    """Bytes sent by this rank, keyed by (src world rank, dst world rank)."""

    def __init__(self) -> None:
        self._counts: Counter = Counter()
        self._lock = threading.Lock()

    def record(self, src: int, dst: int, nbytes: int) -> None:
        if nbytes:
            with self._lock:
                self._counts[(src, dst)] += int(nbytes)

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


LINK_BYTES = LinkBytes()


class LinkByteWindow:
    """The bytes recorded between entering and leaving :func:`count_link_bytes`."""

    def __init__(self, before: dict):
        self._before = before
        self.sent: dict = {}

    def close(self) -> None:
        after = LINK_BYTES.snapshot()
        self.sent = {k: v - self._before.get(k, 0) for k, v in after.items() if v != self._before.get(k, 0)}

    def total(self) -> int:
        return sum(self.sent.values())

    def to(self, dst: int) -> int:
        return sum(v for (_, d), v in self.sent.items() if d == dst)


@contextlib.contextmanager
def count_link_bytes() -> Iterator[LinkByteWindow]:
    """Count the bytes this rank sends inside the block, per (src, dst) world-rank pair."""
    window = LinkByteWindow(LINK_BYTES.snapshot())
    try:
        yield window
    finally:
        window.close()
