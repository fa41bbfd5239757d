"""Point-to-point messages of hpcrt collectives: arrays made MPI-ready by the runtime's staging
(contiguous, stream-synced, host-staged GPU buffers), every byte recorded per link, and — under
link emulation — each message that crosses a (virtual) node held back by its link's α-β cost."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Optional

import numpy as np
from mpi4py import MPI

from hpcrt.backends.arrays import ArrayBackend
from hpcrt.core.runtime import get_runtime

from hpcrt.collectives.comm.linkbytes import LINK_BYTES

_WORLD_RANKS_KEYVAL: list = []


def _world_ranks(comm: Any) -> tuple[int, ...]:
    """Ranks of ``comm``'s members in the runtime's communicator (cached as an MPI attribute)."""
    if not _WORLD_RANKS_KEYVAL:
        _WORLD_RANKS_KEYVAL.append(MPI.Comm.Create_keyval())
    keyval = _WORLD_RANKS_KEYVAL[0]
    ranks = comm.Get_attr(keyval)
    if ranks is None:
        group, world_group = comm.Get_group(), get_runtime().comm.Get_group()
        ranks = tuple(MPI.Group.Translate_ranks(group, list(range(comm.size)), world_group))
        group.Free()
        world_group.Free()
        comm.Set_attr(keyval, ranks)
    return ranks


SENDABLE_KINDS = "biufc"
"""dtype kinds a message can carry as values: booleans and numbers (not objects, strings, dates
or records)."""


def unsendable(dtype: Any) -> Optional[str]:
    """Why arrays of ``dtype`` cannot travel between ranks as their values, or None."""
    dtype = np.dtype(dtype)
    if dtype.kind not in SENDABLE_KINDS:
        return f"dtype {dtype} cannot be sent between ranks; numeric or boolean arrays only"
    if not dtype.isnative:
        return f"dtype {dtype} is not in this machine's byte order; convert it with x.astype(x.dtype.newbyteorder('='))"
    return None


def hold_for(seconds: float) -> None:
    """Wait ``seconds`` precisely: sleep through most of it, spin the last half millisecond."""
    deadline = time.perf_counter() + seconds
    if seconds > 1e-3:
        time.sleep(seconds - 5e-4)
    while time.perf_counter() < deadline:
        pass


class Pending:
    """A non-blocking send or receive; :meth:`wait` completes it and lands staged data (``stack``
    holds the staging to undo, None where MPI got the caller's array itself)."""

    __slots__ = ("request", "_stack")

    def __init__(self, request: Any, stack: Optional[contextlib.ExitStack] = None):
        self.request = request
        self._stack = stack

    def wait(self) -> None:
        self.request.Wait()
        if self._stack is not None:
            self._stack.close()


def wait_all(pending: list) -> None:
    """Complete several :class:`Pending` operations at once (one Waitall, then each one's staging
    undone as :meth:`Pending.wait` would: a schedule's many small messages pay no call per message)."""
    MPI.Request.Waitall([p.request for p in pending])
    for p in pending:
        if p._stack is not None:
            p._stack.close()


def host_ready(array: Any) -> bool:
    """A contiguous numpy array: MPI takes it as it is, with no staging to set up or undo (the
    common case of a pipeline's many small messages, where that setup is a cost of its own)."""
    return type(array) is np.ndarray and array.flags.c_contiguous


def intracomm(comm: Optional[Any], collective: str) -> Any:
    """``comm``, or the runtime's where None; TypeError unless it is an intracommunicator (an
    intercommunicator's ranks name the other group, so a schedule on it would go wrong silently)."""
    runtime = get_runtime()
    if comm is None or isinstance(comm, MPI.Intracomm):
        return runtime.comm if comm is None else comm
    if isinstance(comm, MPI.Comm) and comm != MPI.COMM_NULL and not comm.Is_inter():
        return comm
    what = ("an intercommunicator" if isinstance(comm, MPI.Comm) and comm != MPI.COMM_NULL
            else repr(comm) if isinstance(comm, MPI.Comm) else f"an object of type {type(comm).__name__}")
    raise TypeError(f"{collective}: comm must be an intracommunicator (one group of ranks, such as the "
                    f"runtime's or one from its Split or Dup), got {what} on rank {runtime.rank}")


class Transport:
    """Sends and receives numpy/CuPy arrays on one intracommunicator of the runtime."""

    def __init__(self, comm: Optional[Any] = None, collective: str = "hpcrt collective"):
        runtime = get_runtime()
        self.comm = intracomm(comm, collective)
        self.staging = runtime.staging
        self.rank = self.comm.rank
        self.size = self.comm.size
        self._world = _world_ranks(self.comm)
        self._src = self._world[self.rank]
        self._topology = runtime.topology if runtime.topology.emulate else None
        self.plans: dict = {}
        """What repeated calls on this communicator reuse, by call shape (see :func:`.entry.planned`)."""

    def world_rank(self, rank: int) -> int:
        return self._world[rank]

    @property
    def world_ranks(self) -> tuple[int, ...]:
        """Every member's rank in the runtime's communicator, in this communicator's order."""
        return self._world

    def _account(self, dest: int, nbytes: int) -> None:
        """Record the bytes on their link; under emulation, first spend the link's time if it leaves the node."""
        src, dst = self._src, self._world[dest]
        if self._topology is not None and self._topology.node_of(src) != self._topology.node_of(dst):
            hold_for(self._topology.link_cost(src, dst).time(nbytes))
        LINK_BYTES.record(src, dst, nbytes)

    def send(self, array: Any, dest: int, tag: int = 0) -> None:
        self._account(dest, array.nbytes)
        with self.staging.readable(array) as buf:
            self.comm.Send(buf, dest, tag)

    def recv(self, array: Any, source: int, tag: int = 0) -> None:
        with self.staging.writable(array) as buf:
            self.comm.Recv(buf, source, tag)

    def sendrecv(self, send_array: Any, dest: int, recv_array: Any, source: int, tag: int = 0) -> None:
        self._account(dest, send_array.nbytes)
        with self.staging.readable(send_array) as sbuf, self.staging.writable(recv_array) as rbuf:
            self.comm.Sendrecv(sbuf, dest, tag, rbuf, source, tag)

    def isend(self, array: Any, dest: int, tag: int = 0, backend: Optional[ArrayBackend] = None) -> Pending:
        """Start sending ``array`` (``backend``: the array's, where the caller already knows it)."""
        self._account(dest, array.nbytes)
        if host_ready(array):
            return Pending(self.comm.Isend(array, dest, tag))
        stack = contextlib.ExitStack()
        buf = stack.enter_context(self.staging.readable(array, backend))
        return Pending(self.comm.Isend(buf, dest, tag), stack)

    def irecv(self, array: Any, source: int, tag: int = 0, backend: Optional[ArrayBackend] = None) -> Pending:
        """Start receiving into ``array`` (``backend`` as in :meth:`isend`)."""
        if host_ready(array):
            return Pending(self.comm.Irecv(array, source, tag))
        stack = contextlib.ExitStack()
        buf = stack.enter_context(self.staging.writable(array, backend))
        return Pending(self.comm.Irecv(buf, source, tag), stack)
