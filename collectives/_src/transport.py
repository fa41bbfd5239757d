"""Point-to-point messages of hpcrt collectives: arrays made MPI-ready by the runtime's staging
(contiguous, stream-synced, host-staged GPU buffers), and every byte recorded per link."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

from mpi4py import MPI

from hpcrt._src.runtime import get_runtime

from .linkbytes import LINK_BYTES

_WORLD_RANKS_KEYVAL: list = []


def _world_ranks(comm: Any) -> list[int]:
    """Ranks of ``comm``'s members in the runtime's communicator (cached as an MPI attribute)."""
    if not _WORLD_RANKS_KEYVAL:
        _WORLD_RANKS_KEYVAL.append(MPI.Comm.Create_keyval())
    keyval = _WORLD_RANKS_KEYVAL[0]
    ranks = comm.Get_attr(keyval)
    if ranks is None:
        group, world_group = comm.Get_group(), get_runtime().comm.Get_group()
        ranks = list(MPI.Group.Translate_ranks(group, list(range(comm.size)), world_group))
        group.Free()
        world_group.Free()
        comm.Set_attr(keyval, ranks)
    return ranks


class Pending:
    """A non-blocking send or receive; :meth:`wait` completes it and lands staged data."""

    def __init__(self, request: Any, stack: contextlib.ExitStack):
        self.request = request
        self._stack = stack

    def wait(self) -> None:
        self.request.Wait()
        self._stack.close()


def wait_all(pending: list) -> None:
    """Complete several :class:`Pending` operations at once."""
    MPI.Request.Waitall([p.request for p in pending])
    for p in pending:
        p._stack.close()


class Transport:
    """Sends and receives numpy/CuPy arrays on one communicator of the runtime."""

    def __init__(self, comm: Optional[Any] = None):
        runtime = get_runtime()
        self.comm = comm if comm is not None else runtime.comm
        self.staging = runtime.staging
        self.rank = self.comm.rank
        self.size = self.comm.size
        self._world = _world_ranks(self.comm)

    def world_rank(self, rank: int) -> int:
        return self._world[rank]

    def _record(self, dest: int, nbytes: int) -> None:
        LINK_BYTES.record(self._world[self.rank], self._world[dest], nbytes)

    def send(self, array: Any, dest: int, tag: int = 0) -> None:
        with self.staging.readable(array) as buf:
            self.comm.Send(buf, dest, tag)
        self._record(dest, array.nbytes)

    def recv(self, array: Any, source: int, tag: int = 0) -> None:
        with self.staging.writable(array) as buf:
            self.comm.Recv(buf, source, tag)

    def sendrecv(self, send_array: Any, dest: int, recv_array: Any, source: int, tag: int = 0) -> None:
        with self.staging.readable(send_array) as sbuf, self.staging.writable(recv_array) as rbuf:
            self.comm.Sendrecv(sbuf, dest, tag, rbuf, source, tag)
        self._record(dest, send_array.nbytes)

    def isend(self, array: Any, dest: int, tag: int = 0) -> Pending:
        stack = contextlib.ExitStack()
        buf = stack.enter_context(self.staging.readable(array))
        self._record(dest, array.nbytes)
        return Pending(self.comm.Isend(buf, dest, tag), stack)

    def irecv(self, array: Any, source: int, tag: int = 0) -> Pending:
        stack = contextlib.ExitStack()
        buf = stack.enter_context(self.staging.writable(array))
        return Pending(self.comm.Irecv(buf, source, tag), stack)
