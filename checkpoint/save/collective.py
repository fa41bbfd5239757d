"""The checkpointer's collectives: traced, bounded, and waited on without spinning.

Every one is reported to the flight recorder through the runtime core's trace hook (the one
hpcrt's collectives use), so that the monitor's hang detection and ``hpcrt diagnose`` see a
rank that never reaches a checkpoint collective. Without a monitor, each wait is bounded by the
checkpointer's ``collective_timeout_s``: a peer that has not arrived by then (it skipped a
``save()``, ``restore()`` or ``close()`` the others made, or it is stuck or dead) fails the
collective with :class:`CollectiveTimeoutError`, and the :class:`Collectives` is *broken*: MPI
cannot cancel a collective, so every later one raises at once instead of matching the abandoned
one on the other ranks. Objects travel pickled, as with mpi4py's lower-case calls, but through
non-blocking buffer collectives (a size, then the bytes), which is what makes the wait bounded.
"""

from __future__ import annotations

import pickle
import time
from typing import Any, Optional, Sequence

import numpy as np

from hpcrt.core import trace_hook as trace
from hpcrt.core.trace_hook import trace_collective, trace_done

from hpcrt.checkpoint.errors import CheckpointError

POLL_S = 1e-4
"""Sleep between two tests of the requests: the latency a wait adds at most."""


class CollectiveTimeoutError(CheckpointError):
    """A checkpoint collective that not every rank reached within the timeout."""


class Collectives:
    """Bounded, traced collectives over ``comm`` (the checkpointer's private duplicate)."""

    def __init__(self, comm: Any, timeout_s: float):
        self.comm = comm
        self.rank, self.size = comm.rank, comm.size
        self.timeout_s = timeout_s
        # A vote waits for the slowest rank's file writes: the monitor must not call that a hang
        # before this bound does.
        trace.allow_longer("ckpt_", timeout_s)
        self.broken: Optional[str] = None
        """Why this communicator can no longer be used (a collective timed out), or None."""
        self.tracing = False
        """Whether collectives are reported to the flight recorder (see :meth:`announce`)."""
        self._announced: Any = None
        self._abandoned: list = []  # requests given up on and their buffers, which MPI may still write

    def announce(self) -> bool:
        """From the caller's (main) thread: make sure the current flight recorder knows this
        communicator, so that it is registered at the same point of the program on every rank
        (the recorder numbers communicators in the order it first sees them, and a first sight from
        the flush thread would race with the main thread's collectives). Registration is one
        completed record, ``ckpt_register``. Returns whether a recorder runs (then the
        collectives of what the caller starts are traced)."""
        recorder = trace._recorder
        if recorder is not None and recorder is not self._announced:
            trace_done(trace_collective("ckpt_register", self.comm, 0))
            self._announced = recorder
        return recorder is not None

    def _enter(self, op: str, nbytes: int) -> int:
        return trace_collective(op, self.comm, nbytes) if self.tracing else -1

    def check(self) -> None:
        if self.broken is not None:
            raise CollectiveTimeoutError(self.broken)

    def wait(self, requests: Sequence[Any], op: str, keep: Any = None) -> None:
        """Return once every request is complete; raise :class:`CollectiveTimeoutError` (and
        break) after ``timeout_s``. ``keep``: buffers that must outlive abandoned requests."""
        from mpi4py import MPI
        pending = [r for r in requests if r != MPI.REQUEST_NULL]
        deadline = time.monotonic() + self.timeout_s
        while pending and not MPI.Request.Testall(pending):
            if time.monotonic() > deadline:
                self._abandoned.append((pending, keep))
                self.broken = (f"checkpoint collective {op!r}: not every rank reached it within "
                               f"{self.timeout_s:g} s — a rank skipped a save(), restore() or close() that the "
                               "others made, or it is stuck or dead (with the monitor running, `hpcrt diagnose` "
                               "names it); this Checkpointer can no longer be used")
                raise CollectiveTimeoutError(self.broken)
            time.sleep(POLL_S)

    def traced_wait(self, requests: Sequence[Any], op: str, nbytes: int, keep: Any = None) -> None:
        """:meth:`wait` for point-to-point traffic that every rank takes part in, traced as ``op``."""
        token = self._enter(op, nbytes)
        try:
            self.wait(requests, op, keep)
        finally:
            trace_done(token)

    def allgather(self, obj: Any, op: str) -> list:
        """Every rank's ``obj``, in rank order."""
        self.check()
        from mpi4py import MPI
        data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)
        token = self._enter(op, data.nbytes)
        try:
            mine, sizes = np.array([data.nbytes], dtype=np.int64), np.zeros(self.size, dtype=np.int64)
            self.wait([self.comm.Iallgather(mine, sizes)], op, (mine, sizes))
            counts = [int(n) for n in sizes]
            displs = [0] * self.size
            for r in range(1, self.size):
                displs[r] = displs[r - 1] + counts[r - 1]
            out = np.empty(max(sum(counts), 1), dtype=np.uint8)
            self.wait([self.comm.Iallgatherv(data, [out, (counts, displs), MPI.BYTE])], op, (data, out))
            return [pickle.loads(out[d:d + n]) for d, n in zip(displs, counts)]
        finally:
            trace_done(token)

    def bcast(self, obj: Any, op: str, root: int = 0) -> Any:
        """``obj`` of ``root`` on every rank."""
        self.check()
        data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) \
            if self.rank == root else None
        token = self._enter(op, 0 if data is None else data.nbytes)
        try:
            size = np.array([0 if data is None else data.nbytes], dtype=np.int64)
            self.wait([self.comm.Ibcast(size, root=root)], op, size)
            if data is None:
                data = np.empty(int(size[0]), dtype=np.uint8)
            self.wait([self.comm.Ibcast(data, root=root)], op, data)
            return obj if self.rank == root else pickle.loads(data)
        finally:
            trace_done(token)

    def barrier(self, op: str) -> None:
        self.check()
        token = self._enter(op, 0)
        try:
            self.wait([self.comm.Ibarrier()], op)
        finally:
            trace_done(token)
