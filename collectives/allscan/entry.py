"""All-Scan: rank r gets x₀ ⊕ … ⊕ x_{r−1} (or the suffix, for the backward pass) under an
associative, not necessarily commutative op, by a chosen algorithm or the cost model's."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Optional

import numpy as np
from mpi4py import MPI

from hpcrt.core import trace_hook as trace
from hpcrt.core.trace_hook import trace_collective, trace_done

from hpcrt.collectives.allscan import algorithms as allscan_algos
from hpcrt.collectives.allscan.algorithms import ScanCall, Steps
from hpcrt.collectives.allscan.layout import ScanLayout
from hpcrt.collectives.allscan.ops import BUILTIN_OPS, ScanOp, as_parts, check_sendable, from_parts, resolve_op
from hpcrt.collectives.comm.entry import agree, begin, mpi_datatype, planned, signature, transport_for
from hpcrt.collectives.comm.tracing import call_traced, payload_bytes
from hpcrt.collectives.comm.transport import Transport
from hpcrt.collectives.costmodel.allscan import ALGORITHMS, ScanLinks, auto_choice, best_blocks, ran_label, scan_links
from hpcrt.collectives.costmodel.memo import ChoiceMemo, LinkMemo, PlanChoice


KEPT_IDENTITY_BYTES = 64 << 10
"""The largest state whose identity a plan keeps for rank 0's exclusive result (plans are kept per
communicator and shape: a copy of every large state would hold memory for nothing)."""
_QUEUE_KEYVAL: list = []
_IN_FLIGHT = [0]
"""Started scans not finished yet, on any communicator: while there are some, a blocking scan takes
the queue (it finishes them first) instead of going straight to MPI."""
_ORPHANS: list = []
"""Scans never finished on communicators freed since: held for the process's life, since their
messages may still land in their buffers."""


def _orphan(comm: Any, keyval: int, queue: "_Outstanding") -> None:
    """Called by MPI as a communicator with a queue is freed: keep its unfinished scans alive."""
    _ORPHANS.extend(queue.handles)


class _Outstanding:
    """A communicator's started All-Scans not yet finished, in start order, kept as an attribute of
    the communicator (a new communicator never sees a freed one's): a scan's buffers stay valid
    until it is finished, even when its handle was dropped. The lock keeps two threads from
    finishing one scan."""

    def __init__(self) -> None:
        self.handles: list = []
        self.lock = threading.RLock()

    @staticmethod
    def of(comm: Any) -> "_Outstanding":
        """The communicator's queue, made on first use."""
        if not _QUEUE_KEYVAL:
            _QUEUE_KEYVAL.append(MPI.Comm.Create_keyval(delete_fn=_orphan))
        queue = comm.Get_attr(_QUEUE_KEYVAL[0])
        if queue is None:
            queue = _Outstanding()
            comm.Set_attr(_QUEUE_KEYVAL[0], queue)
        return queue


class AllScanHandle:
    """A started All-Scan: compute meanwhile, then :meth:`wait` finishes it and returns the result.

    Waiting finishes every scan started before it on the same communicator first, in start order,
    so scans waited out of order neither cross their messages nor deadlock (every rank finishes
    them in the one order they were started in), and a scan never waited is finished by the next
    wait on its communicator (until then it is in flight, as the monitor sees it)."""

    def __init__(self, steps: Steps, like: Any, trace_token: int, comm: Any):
        self._steps = steps
        self._like = like
        self._trace_token = trace_token
        self._result: Optional[tuple] = None
        self._error: Optional[BaseException] = None
        self._traceback: Any = None
        next(steps)  # posts what the algorithm can post before its first wait
        self._queue = _Outstanding.of(comm)
        self._queue.handles.append(self)
        _IN_FLIGHT[0] += 1

    def wait(self) -> Any:
        """Complete the scan (blocking) and return the result; later calls return it again, or
        raise its error again."""
        with self._queue.lock:
            if self in self._queue.handles:
                for earlier in self._queue.handles[:self._queue.handles.index(self)]:
                    earlier._finish()
                    if isinstance(earlier._error, Exception):
                        raise RuntimeError("all_scan: a scan started before this one on the same communicator "
                                           "failed while finishing it") from earlier._error
                    if earlier._error is not None:
                        raise earlier._error.with_traceback(earlier._traceback)
                self._finish()
        if self._error is not None:
            raise self._error.with_traceback(self._traceback)
        return from_parts(self._result, self._like)

    def _finish(self) -> None:
        """Run the algorithm to its end, keeping its result or its error."""
        try:
            next(self._steps)
        except StopIteration as stop:
            self._result = stop.value
        except BaseException as error:
            self._error, self._traceback = error, error.__traceback__
        else:
            self._error = RuntimeError("an All-Scan algorithm yielded more than once")
        finally:
            self._queue.handles.remove(self)
            _IN_FLIGHT[0] -= 1
            trace_done(self._trace_token)


_SCAN_LINKS = LinkMemo(scan_links)
_CHOICES = ChoiceMemo("all_scan", lambda links, nbytes, size, max_blocks, blocks, builtin_op: auto_choice(
    nbytes, size, links, max_blocks, blocks, builtin_op), ran_label)


def transport_links(transport: Transport) -> ScanLinks:
    """The model's costs for a scan over the communicator's ranks (in the runtime's numbering)."""
    return _SCAN_LINKS.get(transport.world_ranks)


def _auto(transport: Transport, scan_op: Any, layout: ScanLayout, blocks: Optional[int], runs: bool = True) -> tuple:
    """(algorithm, blocks) the cost model picks for this state on ``transport``'s ranks; a given
    ``blocks`` is priced as the pipeline runs it, at most one per row. ``runs``: the call runs it
    (tallied in ``auto_ran``), not just asks."""
    max_blocks = _max_blocks(layout, scan_op)
    shape = (layout.nbytes, transport.size, max_blocks, None if blocks is None else min(int(blocks), max_blocks),
             allscan_algos.mpi_builtin_op(scan_op, layout) is not None)
    links = transport_links(transport)
    return _CHOICES.get(links, *shape) if runs else _CHOICES.entry(links, *shape)[0]


def _prepare(x: Any, op: Any, algorithm: str, blocks: Optional[int]) -> tuple:
    """(op, contiguous arrays, layout) of a call; TypeError/ValueError for what is wrong with it."""
    if algorithm != "auto" and algorithm not in ALGORITHMS:
        raise ValueError(f"all_scan: unknown algorithm {algorithm!r}; choose auto or one of {', '.join(ALGORITHMS)}")
    if blocks is not None and (isinstance(blocks, bool) or not isinstance(blocks, Integral) or blocks < 1):
        raise ValueError(f"all_scan: blocks must be a positive integer, got {blocks!r}")
    if blocks is not None and algorithm not in ("auto", "pipeline"):
        raise ValueError(f"all_scan: blocks applies to the pipeline algorithm, not {algorithm!r}")
    scan_op = resolve_op(op)
    if scan_op.check is not None:
        scan_op.check(x)
    parts = tuple(part if part.flags.c_contiguous else part.copy() for part in as_parts(x))
    check_sendable(parts)
    return scan_op, parts, ScanLayout.of(parts, scan_op.rowwise)


def all_scan_start(x: Any, op: Any, *, comm: Optional[MPI.Intracomm] = None, inclusive: bool = False,
                   reverse: bool = False, algorithm: str = "auto", blocks: Optional[int] = None,
                   validate: bool = True) -> AllScanHandle:
    """Start an All-Scan and return its handle; see :func:`all_scan`.

    Communication that can start does; the pipeline forwards its blocks inside ``wait()``, so
    the caller's local work between start and wait overlaps the other ranks' progress.
    Waiting a scan first finishes the scans started before it on the same communicator (so any
    wait order is safe), and ``x`` must not change until ``wait()`` returns (MPI and the pipeline
    read it meanwhile).
    """
    return _started(x, op, comm, inclusive, reverse, algorithm, blocks, validate, False)


def _started(x: Any, op: Any, comm: Optional[MPI.Intracomm], inclusive: bool, reverse: bool, algorithm: str,
             blocks: Optional[int], validate: bool, blocking: bool) -> AllScanHandle:
    """:func:`all_scan_start`, for a caller that waits at once where ``blocking``."""
    transport = transport_for(comm, "all_scan")
    token = trace_collective("all_scan", transport.comm, payload_bytes(x))
    try:
        return _start(transport, token, x, op, inclusive, reverse, algorithm, blocks, validate, blocking)
    except BaseException:
        trace_done(token)
        raise


def _builtin(scan_op: ScanOp) -> bool:
    """Whether ``scan_op`` is one of hpcrt's own ops (which cannot raise on checked operands)."""
    return BUILTIN_OPS.get(scan_op.name) is scan_op


def _op_label(scan_op: ScanOp) -> str:
    """How ranks compare ops: by name, and a user op never passes for the builtin of the same name
    (MPI runs one but not the other, so ``auto`` may price them apart)."""
    return scan_op.name if _builtin(scan_op) else f"{scan_op.name} (user op)"


def _start(transport: Transport, token: int, x: Any, op: Any, inclusive: bool, reverse: bool, algorithm: str,
           blocks: Optional[int], validate: bool, blocking: bool) -> AllScanHandle:
    """Check the call (collectively with ``validate``) and post the algorithm's first messages."""
    problem: Optional[Exception] = None
    try:
        scan_op, parts, layout = _prepare(x, op, algorithm, blocks)
    except (TypeError, ValueError) as error:
        problem = error
    ok = problem is None
    fields = _fields(scan_op if ok else None, layout if ok else None, inclusive, reverse, algorithm,
                     blocks) if validate else {}
    begin(transport.comm, "all_scan", problem, fields, validate)
    call = ScanCall(transport, scan_op, layout, parts, x, inclusive, reverse, blocking)
    return AllScanHandle(_steps(call, algorithm, blocks), x, token, transport.comm)


def _fields(scan_op: Optional[ScanOp], layout: Optional[ScanLayout], inclusive: bool, reverse: bool,
            algorithm: str, blocks: Any) -> dict:
    """What the ranks of one scan agree on (besides their input errors)."""
    return {"op": None if scan_op is None else _op_label(scan_op), "shape": None if layout is None else layout.shapes,
            "dtype": None if layout is None else tuple(str(d) for d in layout.dtypes),
            "inclusive": inclusive, "reverse": reverse, "algorithm": algorithm, "blocks": blocks}


@dataclass(frozen=True)
class _DirectPlan:
    """A scan of one host array under a builtin op MPI has (sum, or max of integers): what its
    repeated calls share, so that each goes to MPI's own scan with little around it."""

    shape: tuple
    dtype: np.dtype
    layout: ScanLayout
    count: int
    mpi_type: Any
    """x's elements and MPI's datatype for them, named in the MPI call (quicker than mpi4py's inference)."""
    mpi_op: Any
    identity: Any
    first_result: Optional[np.ndarray]
    """Rank 0's exclusive result, the identity, copied for each call (quicker than filling one);
    None for a state over :data:`KEPT_IDENTITY_BYTES`, which each call fills."""
    fields: dict
    signed: bytes
    auto: PlanChoice
    """What ``auto`` runs for these calls."""

    def identity_result(self) -> np.ndarray:
        """Rank 0's exclusive result, the identity: a copy of the kept one, else filled anew."""
        if self.first_result is None:
            return np.full(self.shape, self.identity, self.dtype)
        return self.first_result.copy()


def _make_direct_plan(transport: Transport, x: np.ndarray, op: Any, inclusive: bool, reverse: bool,
                      algorithm: Any) -> Optional[_DirectPlan]:
    """The plan of a call that may go straight to MPI's scan, or None (the general path runs it)."""
    if type(op) is not str or algorithm not in ("mpi", "auto"):
        return None
    try:
        scan_op, parts, layout = _prepare(x, op, algorithm, None)
    except (TypeError, ValueError):
        return None  # the general path reports it
    mpi_op = allscan_algos.mpi_builtin_op(scan_op, layout)
    mpi_type = mpi_datatype(x.dtype)
    if mpi_op is None or (mpi_op is MPI.MAX and x.dtype.kind == "f") or not layout.nbytes or mpi_type is None:
        return None  # float max travels as integer keys (NaN), and an empty scan has nothing to send
    fields = _fields(scan_op, layout, inclusive, reverse, algorithm, None)
    identity = scan_op.identity(x.reshape(-1)[:1])[0]
    auto = PlanChoice(transport, _CHOICES, _SCAN_LINKS, layout.nbytes, transport.size, _max_blocks(layout, scan_op),
                      None, True)
    return _DirectPlan(x.shape, x.dtype, layout, x.size, mpi_type, mpi_op, identity,
                       np.full(x.shape, identity, x.dtype) if x.nbytes <= KEPT_IDENTITY_BYTES else None, fields,
                       signature("all_scan", {"input_error": None, **fields}), auto)


def _scan_directly(transport: Transport, plan: _DirectPlan, x: np.ndarray, inclusive: bool, reverse: bool,
                   validate: bool) -> np.ndarray:
    """The scan by MPI's own call, after the agreement where ``validate``."""
    if validate:
        agree(transport.comm, "all_scan", plan.signed, plan.fields)
    if reverse:
        return allscan_algos.mpi_scan_now(allscan_algos.reversed_comm(transport.comm), x, plan.mpi_op, plan.identity,
                                          inclusive)
    if inclusive:
        result = np.empty(plan.shape, plan.dtype)
        transport.comm.Scan([x, plan.count, plan.mpi_type], [result, plan.count, plan.mpi_type], plan.mpi_op)
    else:  # rank 0's receive buffer is not significant to MPI's Exscan: it keeps the identity
        result = np.empty(plan.shape, plan.dtype) if transport.rank else plan.identity_result()
        transport.comm.Exscan([x, plan.count, plan.mpi_type], [result, plan.count, plan.mpi_type], plan.mpi_op)
    return result


def _max_blocks(layout: ScanLayout, scan_op: Any) -> int:
    """The most row blocks a pipeline can cut the state into (one unless the op is row-wise)."""
    return max(1, layout.rows) if scan_op.rowwise else 1


def all_scan_choice(x: Any, op: Any, *, comm: Optional[MPI.Intracomm] = None,
                    blocks: Optional[int] = None) -> tuple[str, int]:
    """(algorithm, pipeline blocks) that ``all_scan(x, op, algorithm="auto", blocks=blocks)`` runs on
    ``comm``: the cost model's choice at the costs the job knows, the same on every rank and for either
    direction, inclusive or not. Local: sends nothing."""
    scan_op, _, layout = _prepare(x, op, "auto", blocks)
    return _auto(Transport(comm, "all_scan_choice"), scan_op, layout, blocks, runs=False)


def _steps(call: ScanCall, algorithm: str, blocks: Optional[int]) -> Steps:
    """The chosen algorithm's generator; ``auto`` and an unset block count come from the cost model."""
    max_blocks = _max_blocks(call.layout, call.op)
    size = call.transport.size
    if algorithm == "auto":
        algorithm, blocks = _auto(call.transport, call.op, call.layout, blocks)
    if algorithm == "pipeline":
        if blocks is None:
            blocks = best_blocks(call.layout.nbytes, size, transport_links(call.transport), max_blocks)
        steps = allscan_algos.pipeline(call, min(int(blocks), max_blocks))
    elif algorithm == "ring":
        steps = allscan_algos.pipeline(call, 1)
    else:
        steps = {"allgather": allscan_algos.allgather, "mpi": allscan_algos.mpi}[algorithm](call)
    return steps if _builtin(call.op) else _raised_everywhere(call.transport.comm, steps)


def _raised_everywhere(comm: Any, steps: Steps) -> Steps:
    """``steps`` (of a user op, which may raise) closed by one small agreement: where the op raised
    on any rank, every rank raises (that rank its own error, the others a RuntimeError naming it).
    The algorithms deliver every message even when the op raises, so all ranks get here."""
    try:
        result = yield from steps
        failed: Optional[Exception] = None
    except Exception as error:
        failed = error
    flag = np.array([failed is not None], dtype=np.int32)
    comm.Allreduce(MPI.IN_PLACE, flag, MPI.MAX)
    if flag[0]:
        reports = comm.allgather(None if failed is None else f"{type(failed).__name__}: {failed}")
        if failed is not None:
            raise failed
        detail = "; ".join(f"rank {rank}: {report}" for rank, report in enumerate(reports) if report is not None)
        raise RuntimeError(f"all_scan: the op raised on another rank of the communicator ({detail}); "
                           f"seen on rank {comm.rank}")
    return result


def all_scan(x: Any, op: Any, *, comm: Optional[MPI.Intracomm] = None, inclusive: bool = False, reverse: bool = False,
             algorithm: str = "auto", blocks: Optional[int] = None, validate: bool = True) -> Any:
    """Scan ``x`` across the ranks of ``comm`` (default: the runtime's) under ``op``.

    Rank r gets x₀ ⊕ … ⊕ x_{r−1} (rank 0: the identity); with ``inclusive`` through x_r; with
    ``reverse`` the suffix x_{r+1} ⊕ (x_{r+2} ⊕ …) (from x_r when inclusive). ``op`` is "sum",
    "max", "affine" (x a pair (a, b), a broadcastable against b, (a₁,b₁)⊕(a₂,b₂) =
    (a₁a₂, a₂b₁+b₂)), or a :class:`ScanOp`. ``algorithm``: pipeline (``blocks`` row blocks, by
    default K* from the cost model), allgather, ring, mpi, or auto (least predicted time).
    With ``validate`` ranks that disagree on the call raise CollectiveMismatchError together;
    "max" propagates NaN (numpy's maximum) on every algorithm; a user op that raises on one rank
    raises there and makes every other rank raise a RuntimeError naming it (no rank waits forever).
    The result has x's structure and lives on x's backend.
    """
    if type(x) is np.ndarray and blocks is None and not _IN_FLIGHT[0] and x.flags.c_contiguous:
        transport = transport_for(comm, "all_scan")
        key = ("all_scan", x.shape, x.dtype, op, inclusive, reverse, algorithm)
        try:
            plan = transport.plans[key]
        except (KeyError, TypeError):
            plan = planned(transport, key, _make_direct_plan, transport, x, op, inclusive, reverse, algorithm)
        if plan is not None and (algorithm == "mpi" or plan.auto.runs("mpi")):
            if trace._recorder is None:  # no monitor: nothing to record
                return _scan_directly(transport, plan, x, inclusive, reverse, validate)
            return call_traced("all_scan", transport.comm, x.nbytes, _scan_directly, transport, plan, x,
                               inclusive, reverse, validate)
    return _started(x, op, comm, inclusive, reverse, algorithm, blocks, validate, True).wait()
