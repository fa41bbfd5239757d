"""The ``mpi`` baseline of the ring collectives: the plain MPI call on runtime-staged buffers.

MPI's own max and min keep or drop a NaN depending on the order they meet the values in (ranks
then disagree), so a float max/min message carries one flag more: ±1 where the rank's operand
holds a NaN. Where the reduced flag shows one, a second reduction of the NaN masks puts NaN
wherever any rank had one, as numpy's maximum/minimum (and the rings) do; without NaN the call
is MPI's own plus that one element.
MPI moves these bytes itself, so they are not recorded per link (``count_link_bytes`` sees
nothing of them).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from mpi4py import MPI

from hpcrt.backends.arrays import ArrayBackend
from hpcrt.backends.staging import Staging

from hpcrt.collectives.comm.blocks import block_bounds
from hpcrt.collectives.comm.reduce_ops import mpi_op
from hpcrt.collectives.comm.transport import host_ready

_NAN_FLAGS = {"max": 1, "min": -1}
"""What a rank holding a NaN adds to its message under each op: a value the op keeps over 0."""


def mpi_allreduce(comm: Any, staging: Staging, backend: ArrayBackend, x: Any, op: str, out: Any) -> Any:
    """MPI's Allreduce of ``x`` into ``out`` (an array of x's shape, dtype and backend; may be x itself)."""
    if not _nan_aware(x, op):
        if out is x and host_ready(x):
            comm.Allreduce(MPI.IN_PLACE, out, mpi_op(op))
        else:
            _staged(staging, backend, x, out, lambda send, recv: comm.Allreduce(send, recv, mpi_op(op)))
        return out
    out[...] = _flagged_reduce(staging, backend, x.reshape(-1), op, [(0, x.size)], 0,
                               lambda send, recv, op_, extra: comm.Allreduce(send, recv, op_)).reshape(x.shape)
    return out


def mpi_allgather(comm: Any, staging: Staging, backend: ArrayBackend, x: Any, out: Any) -> Any:
    """MPI's Allgather of ``x`` into ``out`` (the gathered shape)."""
    _staged(staging, backend, x, out, lambda send, recv: comm.Allgather(send, recv))
    return out


def mpi_reduce_scatter(comm: Any, staging: Staging, backend: ArrayBackend, x: Any, op: str, out: Any) -> Any:
    """MPI's Reduce_scatter of flat ``x`` in :func:`block_bounds` blocks, this rank's into ``out``."""
    bounds = block_bounds(x.size, comm.size)
    counts = [stop - start for start, stop in bounds]
    if not _nan_aware(x, op):
        _staged(staging, backend, x.reshape(-1), out,
                lambda send, recv: comm.Reduce_scatter(send, recv, counts, mpi_op(op)))
        return out
    out[...] = _flagged_reduce(staging, backend, x.reshape(-1), op, bounds, comm.rank, lambda send, recv, op_, extra: (
        comm.Reduce_scatter(send, recv, [count + extra for count in counts], op_)))
    return out


def _staged(staging: Staging, backend: ArrayBackend, send: Any, recv: Any, call: Callable[[Any, Any], None]) -> None:
    """Run ``call(send, recv)`` on MPI-ready views of the two arrays (recv written back after);
    contiguous numpy arrays go as they are (no staging to set up, a cost of its own at 8 bytes)."""
    if host_ready(send) and host_ready(recv):
        return call(send, recv)
    with staging.readable(send, backend) as send_buf, staging.writable(recv, backend) as recv_buf:
        call(send_buf, recv_buf)


def _nan_aware(x: Any, op: str) -> bool:
    """Whether MPI's own op might meet a NaN: max or min of a non-empty float array."""
    return op in _NAN_FLAGS and x.dtype.kind == "f" and x.size > 0


def _flagged_reduce(staging: Staging, backend: ArrayBackend, flat: Any, op: str, bounds: list, rank: int,
                    reduce: Callable[[Any, Any, Any, int], None]) -> Any:
    """``reduce(send, recv, mpi_op, extra)`` of the ``bounds`` blocks of ``flat``, block ``rank``
    returned, each block sent with this rank's NaN flag after it (``extra`` = 1 element more per
    block); where any rank flagged a NaN, a second ``reduce`` of the NaN masks restores them."""
    xp = backend.xp
    flag = _NAN_FLAGS[op] if math.isnan(flat.min()) else 0  # min is NaN where any element is
    send = xp.empty(flat.size + len(bounds), dtype=flat.dtype)
    for block, (start, stop) in enumerate(bounds):
        send[start + block:stop + block] = flat[start:stop]
        send[stop + block] = flag
    start, stop = bounds[rank]
    out = xp.empty(stop - start + 1, dtype=flat.dtype)
    _staged(staging, backend, send, out, lambda send_buf, recv_buf: reduce(send_buf, recv_buf, mpi_op(op), 1))
    if bool(out[-1] != 0):
        seen = xp.empty(stop - start, dtype=np.uint8)
        _staged(staging, backend, xp.isnan(flat).view(np.uint8), seen,
                lambda send_buf, recv_buf: reduce(send_buf, recv_buf, MPI.MAX, 0))
        out[:-1][seen.view(bool)] = np.nan
    return out[:-1]
