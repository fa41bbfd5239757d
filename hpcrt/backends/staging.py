"""Making arrays MPI-ready: contiguous buffers, stream sync, and host staging of GPU buffers
through a reusable pinned pool when MPI is not CUDA-aware."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Optional

import numpy as np

from hpcrt.backends.arrays import ArrayBackend, backend_of


def _pinned_empty(nbytes: int) -> np.ndarray:
    """Page-locked host memory from CuPy where it exists, else ordinary host memory."""
    try:
        import cupyx
        return cupyx.empty_pinned((nbytes,), dtype=np.uint8)
    except Exception:  # no CuPy or no driver: staging serves the fake GPU only
        return np.empty(nbytes, dtype=np.uint8)


class PinnedPool:
    """Host buffers in power-of-two size classes, reused across calls, at most ``limit_bytes`` pooled.

    A request beyond the limit still gets a buffer, which is dropped instead of pooled on release.
    """

    def __init__(self, limit_bytes: int, allocate: Callable[[int], np.ndarray] = _pinned_empty):
        self.limit_bytes = limit_bytes
        self._allocate = allocate
        self._free: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self.pooled_bytes = 0  # free bytes held in the pool
        self.allocations = 0
        self.reuses = 0

    @staticmethod
    def _size_class(nbytes: int) -> int:
        return 1 << max(int(nbytes) - 1, 0).bit_length()

    def acquire(self, nbytes: int) -> np.ndarray:
        """A uint8 host buffer of at least ``nbytes`` (its first ``nbytes`` are what callers use)."""
        size = self._size_class(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                self.reuses += 1
                self.pooled_bytes -= size
                return free.pop()
            self.allocations += 1
        return self._allocate(size)

    def release(self, buffer: np.ndarray) -> None:
        """Return a buffer from :meth:`acquire` to the pool (dropped if the pool is full)."""
        with self._lock:
            if self.pooled_bytes + buffer.nbytes > self.limit_bytes:
                return
            self._free.setdefault(buffer.nbytes, []).append(buffer)
            self.pooled_bytes += buffer.nbytes


class Staging:
    """Hands arrays to MPI: numpy as is (made contiguous), GPU arrays directly when MPI is
    CUDA-aware (after a stream sync), otherwise through a pinned host copy."""

    def __init__(self, cuda_aware: bool, pool: PinnedPool):
        self.cuda_aware = cuda_aware
        self.pool = pool

    def _staged(self, backend: ArrayBackend) -> bool:
        return backend.on_device and not self.cuda_aware

    @contextlib.contextmanager
    def readable(self, array: Any, backend: Optional[ArrayBackend] = None) -> Iterator[Any]:
        """A buffer MPI may read (send) holding ``array``'s contents (``backend``: the array's, where the
        caller already knows it)."""
        backend = backend or backend_of(array)
        if not self._staged(backend):
            backend.synchronize(array)
            yield _contiguous(backend, array)
            return
        host = self.pool.acquire(array.nbytes)
        try:
            view = host[:array.nbytes].view(array.dtype).reshape(array.shape)
            view[...] = backend.to_host(array)
            yield view
        finally:
            self.pool.release(host)

    @contextlib.contextmanager
    def writable(self, array: Any, backend: Optional[ArrayBackend] = None) -> Iterator[Any]:
        """A buffer MPI may write (receive) into; on exit its contents land in ``array``."""
        backend = backend or backend_of(array)
        if not self._staged(backend):
            backend.synchronize(array)
            target = _contiguous(backend, array)
            yield target
            if target is not array:
                array[...] = target
            return
        host = self.pool.acquire(array.nbytes)
        try:
            view = host[:array.nbytes].view(array.dtype).reshape(array.shape)
            yield view
            backend.copy_from_host(array, view)
        finally:
            self.pool.release(host)


def _contiguous(backend: ArrayBackend, array: Any) -> Any:
    return array if array.flags.c_contiguous else backend.xp.ascontiguousarray(array)
