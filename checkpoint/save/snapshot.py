"""The host snapshot: every array of a state copied into one pooled (pinned) host buffer.

This is the "memory" level, and the source the slower levels write from, so the caller may
mutate its arrays as soon as the copy is done (the DataStates-LLM lazy copy)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from hpcrt.backends.arrays import backend_of
from hpcrt.backends.staging import PinnedPool

from hpcrt.checkpoint.format.entries import ArrayEntry, FlatState


@dataclass
class Snapshot:
    """A state's arrays in host memory (``buffer``), their layout and the state's JSON values
    (``json_keys``: their keys, sorted; empty for a partner's copy, which only gets written)."""

    step: int
    entries: list
    json_text: str
    buffer: np.ndarray
    pool: Optional[PinnedPool] = field(default=None, repr=False)
    json_keys: tuple = ()

    def view(self, entry: ArrayEntry) -> np.ndarray:
        raw = self.buffer[entry.buf_offset:entry.buf_offset + entry.nbytes]
        return raw.view(np.dtype(entry.dtype)).reshape(entry.shape)

    @property
    def nbytes(self) -> int:
        return max((e.buf_offset + e.nbytes for e in self.entries), default=0)

    def release(self) -> None:
        """Give the buffer back to its pool; the snapshot must not be read afterwards."""
        if self.pool is not None:
            self.pool.release(self.buffer)
            self.pool = None


GIL_FREE_COPY_BYTES = 4 << 20
"""Contiguous numpy arrays from this size on are copied by ``memmove`` through ctypes, which
releases the GIL (``np.copyto`` holds it) so that the caller's Python thread runs on during the
copy; a smaller copy is over before that matters and skips the foreign call's cost."""


def take_snapshot(step: int, flat: FlatState, pool: PinnedPool) -> Snapshot:
    """Copy every array of ``flat`` to a host buffer from ``pool`` (GPU arrays after a stream sync);
    contiguous numpy arrays go to their place in the buffer as raw bytes, without a typed view."""
    buffer = pool.acquire(max(flat.nbytes, 1))
    snap = Snapshot(step, flat.entries, flat.json_text, buffer, pool, flat.json_keys)
    try:
        for entry, array in zip(flat.entries, flat.arrays):
            if type(array) is np.ndarray and array.flags.c_contiguous:
                start, nbytes = entry.buf_offset, array.nbytes
                if nbytes >= GIL_FREE_COPY_BYTES:
                    ctypes.memmove(buffer.ctypes.data + start, array.ctypes.data, nbytes)
                else:
                    np.copyto(buffer[start:start + nbytes], array.reshape(-1).view(np.uint8))
            else:
                copy_to_host(array, snap.view(entry))
    except BaseException:
        snap.release()
        raise
    return snap


def copy_to_host(array: Any, out: np.ndarray) -> None:
    """``out[...] = array`` for a numpy, CuPy or fake-GPU array (CuPy straight into ``out``)."""
    backend = backend_of(array)
    if backend.name == "numpy":
        np.copyto(out, array)
    elif backend.name == "cupy" and array.flags.c_contiguous:
        array.get(out=out)
    else:
        backend.synchronize(array)
        np.copyto(out, backend.to_host(array))
