"""The All-Scan algorithms, each a generator that posts what it can, yields once (the caller
computes meanwhile), then finishes and returns the result arrays: the ZeCO pipeline (the LASP-1
ring is its one-block case), the LASP-2 all-gather, and MPI's own scans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator

import numpy as np
from mpi4py import MPI

from hpcrt.backends.arrays import backend_of, get_xp

from hpcrt.collectives.allscan.layout import ScanLayout, assign, complete
from hpcrt.collectives.allscan.ops import MAX, SUM, ScanOp, from_parts
from hpcrt.collectives.comm.float_keys import from_keys, key_dtype, to_keys
from hpcrt.collectives.comm.msgpool import Borrowed
from hpcrt.collectives.comm.transport import Transport, wait_all
from hpcrt.core.tags import SCAN_FORWARD, SCAN_REVERSE

_MPI_BUILTIN_OPS = ((SUM, MPI.SUM), (MAX, MPI.MAX))
_MPI_BUILTIN_DTYPES = {np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                             np.uint32, np.uint64, np.float32, np.float64)}
_REVERSED_KEYVAL: list = []

Steps = Generator[None, None, tuple]


def _arrays(value: Any, xp: Any) -> tuple:
    """An op's result as a tuple of arrays (numpy hands back scalars for 0-d operands)."""
    return tuple(xp.asarray(part) for part in (value if isinstance(value, (tuple, list)) else (value,)))


@dataclass(frozen=True)
class ScanCall:
    """One All-Scan call: its transport, operator, operand (contiguous arrays) and direction."""

    transport: Transport
    op: ScanOp
    layout: ScanLayout
    parts: tuple
    like: Any
    """The caller's operand, whose structure (array or tuple) the op's functions receive."""
    inclusive: bool
    reverse: bool
    blocking: bool = False
    """Whether the caller waits at once (:func:`all_scan`): MPI's scans are then its blocking ones,
    on every rank alike, since MPI never matches a blocking collective with a non-blocking one."""

    @property
    def xp(self) -> Any:
        return get_xp(self.parts[0])

    @property
    def tag(self) -> int:
        return SCAN_REVERSE if self.reverse else SCAN_FORWARD

    def join(self, lower: tuple, upper: tuple) -> tuple:
        """lower ⊕ upper, operands in rank order, on the operands' backend."""
        return _arrays(self.op.combine(from_parts(lower, self.like), from_parts(upper, self.like)),
                       get_xp(lower[0]))

    def extend(self, incoming: tuple, mine: tuple) -> tuple:
        """The scan so far extended by this rank's operand, on the side the direction puts it."""
        return self.join(mine, incoming) if self.reverse else self.join(incoming, mine)

    def extend_into(self, incoming: tuple, mine: tuple, out: tuple) -> None:
        """:meth:`extend` written into ``out`` (None entries skipped): in place where the op can, the
        parts share one dtype (so no intermediate is cast) and ``out`` is complete, else computed
        anew and copied."""
        into = self.op.combine_into
        if into is None or len(set(self.layout.dtypes)) > 1 or any(target is None for target in out):
            assign(out, self.extend(incoming, mine))
            return
        lower, upper = (mine, incoming) if self.reverse else (incoming, mine)
        into(from_parts(lower, self.like), from_parts(upper, self.like), out)

    def empty(self) -> tuple:
        shapes, dtypes = self.layout.shapes, self.layout.dtypes
        return tuple(self.xp.empty(shape, dtype=dtype) for shape, dtype in zip(shapes, dtypes))

    def identity(self) -> tuple:
        result = self.empty()
        assign(result, _arrays(self.op.identity(from_parts(self.parts, self.like)), self.xp))
        return result

    def copy_of_input(self) -> tuple:
        result = self.empty()
        assign(result, self.parts)
        return result

    def neighbours(self) -> tuple:
        """(previous, next) rank along the chain, None past either end."""
        rank, size = self.transport.rank, self.transport.size
        before, after = (rank + 1, rank - 1) if self.reverse else (rank - 1, rank + 1)
        return (before if 0 <= before < size else None), (after if 0 <= after < size else None)


def pipeline(call: ScanCall, blocks: int) -> Steps:
    """ZeCO All-Scan: per row block, receive the scan so far from the previous rank, extend it
    and forward it at once. All receives are posted up front, sends are non-blocking, so block
    k+1 arrives while block k is combined and forwarded. Each rank but the last sends n bytes.
    Where the op raises, the rank still forwards every block (the scan as received, the op not
    called again) so its successors finish, and raises the op's error at the end."""
    layout, transport = call.layout, call.transport
    before, after = call.neighbours()
    bounds = layout.bounds(blocks)
    slots = layout.message_slots(bounds)
    buffers = Borrowed(call.xp)  # one pooled buffer for the incoming messages, one for the outgoing
    inbox = buffers.take(slots[-1][1]) if before is not None else None
    outbox = buffers.take(slots[-1][1]) if after is not None else None
    receives = []
    if inbox is not None:
        for start, stop in slots:
            buffer = inbox[start:stop]
            receives.append((buffer, transport.irecv(buffer, before, call.tag)))
    sends: list = []
    failures: list = []

    def extend_into(incoming: tuple, mine: tuple, out: tuple) -> None:
        """:meth:`ScanCall.extend_into`, or once the op has raised, ``incoming`` passed on as it is."""
        if not failures:
            try:
                return call.extend_into(incoming, mine, out)
            except Exception as error:
                failures.append(error)
        assign(out, incoming)

    def forward(k: int, fill: Callable[[tuple], None]) -> tuple:
        """Send block k in its outgoing message, which ``fill`` writes; returns the message's views."""
        (lo, hi), (start, stop) = bounds[k], slots[k]
        buffer = outbox[start:stop]
        views = layout.views(buffer, lo, hi, k == 0)
        fill(views)
        sends.append(transport.isend(buffer, after, call.tag))
        return views

    if before is None and after is not None:
        for k, (lo, hi) in enumerate(bounds):
            forward(k, lambda views: assign(views, layout.block(call.parts, lo, hi)))
    yield
    if before is None:
        result = call.copy_of_input() if call.inclusive else call.identity()
    else:
        result = call.empty()
        for k, ((lo, hi), (buffer, pending)) in enumerate(zip(bounds, receives)):
            pending.wait()
            incoming = layout.views(buffer, lo, hi, k == 0)
            if k == 0:
                shared = incoming  # block 0 carries the arrays every block shares
            incoming = complete(incoming, shared)
            mine, target = layout.block(call.parts, lo, hi), layout.block(result, lo, hi, k == 0)
            if after is None:  # the chain's end: only its own result
                if call.inclusive:
                    extend_into(incoming, mine, target)
                else:
                    assign(target, incoming)
                continue
            outgoing = forward(k, lambda views: extend_into(incoming, mine, views))
            assign(target, outgoing if call.inclusive else incoming)
    wait_all(sends)
    buffers.give_back()
    if failures:
        raise failures[0]
    return result


def allgather(call: ScanCall) -> Steps:
    """LASP-2: every rank gathers every rank's state (Bruck's all-gather, ⌈log₂p⌉ rounds; each
    rank sends (p−1)·n bytes, n rounded up to the largest item size so every row's views are
    aligned) and folds the ones its scan needs locally, in rank order."""
    yield
    layout, transport, xp = call.layout, call.transport, call.xp
    rank, size = transport.rank, transport.size
    gathered = xp.empty((size, layout.aligned(layout.nbytes)), dtype=np.uint8)  # row i: rank (rank + i) % size
    assign(layout.views(gathered[0], 0, layout.rows, True), call.parts)
    gathered[0, layout.nbytes:] = 0  # the padding travels too: defined bytes, not leftover memory
    distance = 1
    while distance < size:
        count = min(distance, size - distance)
        transport.sendrecv(gathered[:count], (rank - distance) % size,
                           gathered[distance:distance + count], (rank + distance) % size, call.tag)
        distance *= 2
    own = 0 if call.inclusive else 1  # whether this rank's own state is left out
    first, last = (rank + own, size) if call.reverse else (0, rank + 1 - own)
    states = [layout.views(gathered[(q - rank) % size], 0, layout.rows, True) for q in range(first, last)]
    if not states:
        return call.identity()
    folded = states[-1] if call.reverse else states[0]
    for state in (reversed(states[:-1]) if call.reverse else states[1:]):
        folded = call.join(state, folded) if call.reverse else call.join(folded, state)
    result = call.empty()
    assign(result, folded)
    return result


def reversed_comm(comm: Any) -> Any:
    """``comm`` with its ranks in reverse order (made once per communicator, kept as an attribute)."""
    if not _REVERSED_KEYVAL:
        _REVERSED_KEYVAL.append(MPI.Comm.Create_keyval())
    flipped_ranks = comm.Get_attr(_REVERSED_KEYVAL[0])
    if flipped_ranks is None:
        flipped_ranks = comm.Split(0, comm.size - 1 - comm.rank)
        comm.Set_attr(_REVERSED_KEYVAL[0], flipped_ranks)
    return flipped_ranks


def mpi_builtin_op(op: ScanOp, layout: ScanLayout) -> Any:
    """MPI's own op for ``op`` on this state (sum or max of a plain dtype), or None where MPI must
    call hpcrt's combine back, in Python, on every round."""
    builtin = next((mpi_op for known, mpi_op in _MPI_BUILTIN_OPS if known is op), None)
    return builtin if builtin is not None and layout.dtypes[0] in _MPI_BUILTIN_DTYPES else None


def _poster(comm: Any, inclusive: bool, blocking: bool) -> Callable[..., Any]:
    """The call that posts the scan and returns its request: MPI_Iscan / MPI_Iexscan, or where
    ``blocking`` MPI_Scan / MPI_Exscan, done at once (a null request left to wait on)."""
    if not blocking:
        return comm.Iscan if inclusive else comm.Iexscan
    scan = comm.Scan if inclusive else comm.Exscan

    def post(*args: Any) -> Any:
        scan(*args)
        return MPI.REQUEST_NULL
    return post


def mpi(call: ScanCall) -> Steps:
    """MPI_Iexscan / MPI_Iscan (the blocking scans for a blocking call): the builtin op for sum and
    max of plain dtypes (on the operand itself when it is one host array; a float max as
    :mod:`.float_keys` integers, so NaN propagates), else a non-commutative user op over packed
    host copies. A reverse scan runs on the reversed communicator, where the op applies its
    operands in flipped order. A user op that raises inside MPI is not called again in this scan,
    and its error is raised after the wait."""
    layout = call.layout
    comm = reversed_comm(call.transport.comm) if call.reverse else call.transport.comm
    start = _poster(comm, call.inclusive, call.blocking)
    builtin = mpi_builtin_op(call.op, layout)
    keys = key_dtype(layout.dtypes[0]) if builtin is MPI.MAX else None
    if builtin is not None and len(call.parts) == 1 and type(call.parts[0]) is np.ndarray and layout.nbytes:
        result = call.empty()
        send, recv = call.parts[0], result[0]
        if keys is not None:
            send, recv = np.empty(send.shape, dtype=keys), recv.view(keys)
            to_keys(call.parts[0], send)
        return (yield from _mpi_direct(call, comm.rank, start(send, recv, builtin), result, keys is not None))
    sendbuf = np.empty(layout.nbytes, dtype=np.uint8)
    recvbuf = np.empty(layout.nbytes, dtype=np.uint8)
    assign(layout.views(sendbuf, 0, layout.rows, True),
           tuple(backend_of(part).to_host(part) for part in call.parts))
    freed: list = []
    failures: list = []
    if layout.nbytes == 0:
        request = MPI.REQUEST_NULL
    elif builtin is not None:
        if keys is not None:
            to_keys(sendbuf.view(layout.dtypes[0]), sendbuf.view(keys))
        request = start(sendbuf.view(keys or layout.dtypes[0]), recvbuf.view(keys or layout.dtypes[0]), builtin)
    else:
        whole = MPI.BYTE.Create_contiguous(layout.nbytes).Commit()  # one element: never segmented

        def combine(inbuf: Any, inoutbuf: Any, datatype: Any) -> None:
            if failures:
                return
            lower = layout.views(np.frombuffer(inbuf, dtype=np.uint8), 0, layout.rows, True)
            upper = layout.views(np.frombuffer(inoutbuf, dtype=np.uint8), 0, layout.rows, True)
            try:
                assign(upper, call.join(upper, lower) if call.reverse else call.join(lower, upper))
            except Exception as error:  # raised inside MPI, mpi4py would abort the job
                failures.append(error)

        op = MPI.Op.Create(combine, commute=False)
        freed += [whole, op]
        request = start([sendbuf, 1, whole], [recvbuf, 1, whole], op)
    yield
    request.Wait()
    for handle in freed:
        handle.Free()
    if failures:
        raise failures[0]
    if comm.rank == 0 and not call.inclusive:
        return call.identity()
    if keys is not None and layout.nbytes:
        from_keys(recvbuf.view(keys))
    result = call.empty()
    for target, host in zip(result, layout.views(recvbuf, 0, layout.rows, True)):
        backend_of(target).copy_from_host(target, host)
    return result


def mpi_scan_now(comm: Any, x: np.ndarray, mpi_op: Any, identity: Any, inclusive: bool) -> np.ndarray:
    """MPI_Scan / MPI_Exscan of one contiguous host array under MPI's own op (a blocking call's
    common small case, with nothing around MPI's): rank 0's exclusive result is ``identity``."""
    result = np.empty(x.shape, x.dtype)
    if inclusive:
        comm.Scan(x, result, mpi_op)
    else:
        comm.Exscan(x, result, mpi_op)
        if comm.rank == 0:
            result.fill(identity)
    return result


def _mpi_direct(call: ScanCall, rank: int, request: Any, result: tuple, keyed: bool) -> Steps:
    """The scan of one host array under a builtin op, which the caller started straight from the
    operand (or its keys, where ``keyed``) into ``result``: no packed host copies to make and
    unpack (the common case)."""
    yield
    request.Wait()
    if rank == 0 and not call.inclusive:
        return call.identity()
    if keyed:
        from_keys(result[0].view(key_dtype(result[0].dtype)))
    return result
