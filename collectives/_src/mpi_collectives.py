"""The ``mpi`` baseline of the ring collectives: the plain MPI call on runtime-staged buffers.

MPI moves these bytes itself, so they are not recorded per link (``count_link_bytes`` sees
nothing of them).
"""

from __future__ import annotations

from typing import Any

from hpcrt._src.backends import get_xp
from hpcrt._src.staging import Staging

from .blocks import block_bounds
from .reduce_ops import mpi_op


def mpi_allreduce(comm: Any, staging: Staging, x: Any, op: str) -> Any:
    out = get_xp(x).empty(x.shape, dtype=x.dtype)
    with staging.readable(x) as send, staging.writable(out) as recv:
        comm.Allreduce(send, recv, mpi_op(op))
    return out


def mpi_allgather(comm: Any, staging: Staging, x: Any, shape: tuple) -> Any:
    out = get_xp(x).empty(shape, dtype=x.dtype)
    with staging.readable(x) as send, staging.writable(out) as recv:
        comm.Allgather(send, recv)
    return out


def mpi_reduce_scatter(comm: Any, staging: Staging, x: Any, op: str) -> Any:
    counts = [stop - start for start, stop in block_bounds(x.size, comm.size)]
    out = get_xp(x).empty(counts[comm.rank], dtype=x.dtype)
    with staging.readable(x.reshape(-1)) as send, staging.writable(out) as recv:
        comm.Reduce_scatter(send, recv, counts, mpi_op(op))
    return out
