"""allreduce, allgather and reduce_scatter with the ring, bidirectional-ring and MPI algorithms.

``ring``: one clockwise lane (allreduce = reduce-scatter then all-gather, p − 1 steps each);
``bidir_ring``: from three ranks every block goes both ways at once, half the ring round each, so
each link direction carries half the bytes and a phase takes ⌊p/2⌋ steps (at two, the ring's
schedule: both ways lead to the one neighbour); ``mpi``: the plain MPI call;
``auto``: the smallest α-β prediction (:mod:`.ring_cost`): the ring's slowest link, and the
ring algorithms' steps as the job measured them where it did.
Every algorithm returns a new array on the input's backend and leaves the input untouched, or
writes into ``out=`` (checked like lse_merge's; allreduce's may be the input itself); max and min
propagate NaN (numpy's maximum/minimum) on all of them, the same on every rank; ``avg`` is the sum
divided by the number of ranks, in the operand's (floating or complex) dtype.
``validate=True`` first checks that all ranks agree on shape, dtype, op and algorithm; with
``validate=False`` ranks that disagree may deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from mpi4py import MPI

from hpcrt.backends.arrays import ArrayBackend, backend_of
from hpcrt.core import trace_hook as trace

from hpcrt.collectives.comm.blocks import block_bounds
from hpcrt.collectives.comm.entry import agree, begin, checked_out, mpi_datatype, planned, signature, transport_for
from hpcrt.collectives.comm.reduce_ops import AVERAGING_OPS, REDUCE_OPS, combine_into, mpi_op
from hpcrt.collectives.comm.tracing import call_traced, payload_bytes, traced
from hpcrt.collectives.comm.transport import Transport, unsendable
from hpcrt.collectives.costmodel.memo import ChoiceMemo, LinkMemo, PlanChoice
from hpcrt.collectives.costmodel.rings import ALGORITHMS, RING_COLLECTIVES, auto_choice, ring_costs
from hpcrt.collectives.rings.engine import ring_lanes, ring_pass
from hpcrt.collectives.rings.mpi import mpi_allgather, mpi_allreduce, mpi_reduce_scatter

RING_OPS = REDUCE_OPS + AVERAGING_OPS


def allreduce(x: Any, op: str = "sum", *, comm: Optional[MPI.Intracomm] = None, algorithm: str = "auto",
              validate: bool = True, out: Optional[Any] = None) -> Any:
    """Every rank gets the element-wise ``op`` (sum, max, min, avg) of all ranks' ``x``, same shape;
    into ``out`` where given (``out=x``: in place)."""
    transport, plan = _planned("allreduce", x, comm, op, algorithm)
    if plan.direct and out is None and x.flags.c_contiguous and (
            algorithm == "mpi" or algorithm == "auto" and plan.auto.runs("mpi")):
        if trace._recorder is None:  # no monitor: nothing to record
            return _allreduce_directly(transport, plan, x, op, validate)
        return call_traced("allreduce", transport.comm, x.nbytes, _allreduce_directly, transport, plan, x, op,
                           validate)
    if trace._recorder is None:
        return _allreduce(transport, plan, x, op, algorithm, validate, out)
    return call_traced("allreduce", transport.comm, payload_bytes(x), _allreduce, transport, plan, x, op, algorithm,
                       validate, out)


def _allreduce_directly(transport: Transport, plan: _Plan, x: np.ndarray, op: str, validate: bool) -> np.ndarray:
    """The common small call: MPI's own, after the agreement where ``validate``, nothing else around it."""
    if validate:
        agree(transport.comm, "allreduce", plan.signed, plan.fields)
    result = np.empty(plan.result_shape, plan.dtype)
    transport.comm.Allreduce([x, plan.count, plan.mpi_type], [result, plan.count, plan.mpi_type], plan.mpi_op)
    return _averaged(plan.backend, result, op, transport.size)


def _allreduce(transport: Transport, plan: _Plan, x: Any, op: str, algorithm: str, validate: bool,
               out: Optional[Any]) -> Any:
    """:func:`allreduce` of a planned call, untraced."""
    algorithm = _begin(transport, plan, "allreduce", x, algorithm, validate, out)
    if algorithm == "mpi":
        result = mpi_allreduce(transport.comm, transport.staging, plan.backend, x, op,
                               _result(plan.backend, x.shape, x.dtype, out))
    else:
        result = _work(plan.backend, x, out)
        flat = result.reshape(-1)
        if transport.size > 1 and flat.size:
            lanes = ring_lanes(block_bounds(flat.size, transport.size), algorithm)
            ring_pass(transport, flat, lanes, combine=combine_into(op), backend=plan.backend)
            ring_pass(transport, flat, lanes, backend=plan.backend)
    return _averaged(plan.backend, result, op, transport.size)


@traced("allgather")
def allgather(x: Any, *, comm: Optional[MPI.Intracomm] = None, algorithm: str = "auto", validate: bool = True,
              out: Optional[Any] = None) -> Any:
    """All ranks' ``x`` (same shape everywhere) concatenated along axis 0 in rank order, into ``out``
    where given. A 0-d ``x`` counts as shape (1,): the result then has shape (p,).
    """
    transport, plan = _planned("allgather", x, comm, None, algorithm)
    algorithm = _begin(transport, plan, "allgather", x, algorithm, validate, out)
    result = _result(plan.backend, plan.result_shape, x.dtype, out)
    if algorithm == "mpi":
        return mpi_allgather(transport.comm, transport.staging, plan.backend, x, result)
    p, m, r = transport.size, x.size, transport.rank
    work = result.reshape(-1)
    work[r * m:(r + 1) * m] = x.reshape(-1)
    if p > 1 and m:
        ring_pass(transport, work, ring_lanes([(i * m, (i + 1) * m) for i in range(p)], algorithm),
                  backend=plan.backend)
    return result


@traced("reduce_scatter")
def reduce_scatter(x: Any, op: str = "sum", *, comm: Optional[MPI.Intracomm] = None, algorithm: str = "auto",
                   validate: bool = True, out: Optional[Any] = None) -> Any:
    """Rank r gets block r (1-D) of the element-wise ``op`` (sum, max, min, avg) of all ranks'
    flattened ``x``, into ``out`` where given.

    Blocks follow :func:`block_bounds` (numpy.array_split's rule): sizes need not divide evenly.
    """
    transport, plan = _planned("reduce_scatter", x, comm, op, algorithm)
    algorithm = _begin(transport, plan, "reduce_scatter", x, algorithm, validate, out)
    start, stop = _block(x, transport)
    result = _result(plan.backend, (stop - start,), x.dtype, out)
    if algorithm == "mpi":
        mpi_reduce_scatter(transport.comm, transport.staging, plan.backend, x, op, result)
        return _averaged(plan.backend, result, op, transport.size)
    work = x.flatten()
    if transport.size > 1 and work.size:
        ring_pass(transport, work, ring_lanes(block_bounds(work.size, transport.size), algorithm),
                  combine=combine_into(op), backend=plan.backend)
    result[...] = work[start:stop]
    return _averaged(plan.backend, result, op, transport.size)


def ring_choice(collective: str, x: Any, *, comm: Optional[MPI.Intracomm] = None) -> str:
    """The algorithm ``collective(x, algorithm="auto")`` runs on ``comm`` (allreduce, allgather or
    reduce_scatter): the cost model's choice, the same on every rank. Local: sends nothing."""
    if collective not in RING_COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r}; expected one of {RING_COLLECTIVES}")
    transport = Transport(comm, collective)
    return _RING_CHOICES.entry(_RING_COSTS.get(transport.world_ranks), collective,
                               _model_bytes(collective, x, transport.size), transport.size)[0]


def _model_bytes(collective: str, x: Any, p: int) -> int:
    """The buffer the model prices: the gathered result for allgather, the input otherwise."""
    return p * x.nbytes if collective == "allgather" else x.nbytes


@dataclass(frozen=True)
class _Plan:
    """What every call of one collective with one operand type, shape, dtype, op and algorithm on
    one communicator shares (kept in its transport's ``plans``): the local checks' verdict, the
    agreement's fields and signature, the backend, the result's shape and the MPI op."""

    problem: Optional[Exception]
    algorithm_error: Optional[Exception]
    fields: dict
    signed: bytes
    backend: Optional[ArrayBackend]
    result_shape: Optional[tuple]
    mpi_op: Any
    direct: bool
    """A valid call of a numpy operand whose reduction MPI does alone (no NaN flag): it can go
    straight to MPI."""
    dtype: Any
    count: int
    mpi_type: Any
    """x's elements and MPI's datatype for them, named in a direct call (quicker than mpi4py's inference)."""
    auto: Optional[PlanChoice]
    """What ``auto`` runs for these calls (None for a call with a problem)."""


def _make_plan(transport: Transport, collective: str, x: Any, op: Optional[str], algorithm: str) -> _Plan:
    size = transport.size
    problem = _operand_problem(collective, x, op)
    fields: dict = {"algorithm": algorithm}
    backend, result_shape = None, None
    if problem is None:
        fields.update(shape=tuple(x.shape), dtype=str(x.dtype))
        backend = backend_of(x)
        result_shape = _result_shape(collective, x, size)
    if op is not None:
        fields["op"] = op
    algorithm_error = None
    if algorithm != "auto" and algorithm not in ALGORITHMS:
        algorithm_error = ValueError(f"{collective}: unknown algorithm {algorithm!r}; expected auto or one of "
                                     f"{ALGORITHMS}")
    signed = signature(collective, {"input_error": None if problem is None else str(problem), **fields})
    mpi_type = mpi_datatype(x.dtype) if backend is not None and backend.name == "numpy" else None
    direct = mpi_type is not None and algorithm_error is None and not (op in ("max", "min") and x.dtype.kind == "f")
    auto = None if problem is not None else PlanChoice(transport, _RING_CHOICES, _RING_COSTS, collective,
                                                       _model_bytes(collective, x, size), size)
    return _Plan(problem, algorithm_error, fields, signed, backend, result_shape,
                 mpi_op(op) if op in RING_OPS else None, direct, getattr(x, "dtype", None), getattr(x, "size", 0),
                 mpi_type, auto)


def _new_plan(transport: Transport, collective: str, x: Any, op: Optional[str], algorithm: str) -> _Plan:
    """The plan of a call whose shape ``transport`` has no plan for yet (kept there, unless x is no array)."""
    try:
        key = (collective, type(x), x.shape, x.dtype, op, algorithm)
    except AttributeError:  # no array: checked without a cache
        return _make_plan(transport, collective, x, op, algorithm)
    return planned(transport, key, _make_plan, transport, collective, x, op, algorithm)


def _result_shape(collective: str, x: Any, p: int) -> Optional[tuple]:
    """The result's shape (None for reduce_scatter, whose block depends on the rank)."""
    if collective == "allgather":
        return (p * x.shape[0], *x.shape[1:]) if x.ndim else (p,)
    return None if collective == "reduce_scatter" else tuple(x.shape)


def _block(x: Any, transport: Transport) -> tuple[int, int]:
    """This rank's block of flat ``x`` in a reduce_scatter."""
    return block_bounds(x.size, transport.size)[transport.rank]


def _result(backend: ArrayBackend, shape: tuple, dtype: Any, out: Optional[Any]) -> Any:
    """``out``, or a new array of the result's shape on the operand's backend."""
    return backend.xp.empty(shape, dtype=dtype) if out is None else out


def _work(backend: ArrayBackend, x: Any, out: Optional[Any]) -> Any:
    """The array a ring allreduce works in: ``out`` (checked C-contiguous) holding ``x``, else a copy of x."""
    if out is None:
        return x.copy()
    if out is not x:
        out[...] = x
    return out


def _averaged(backend: ArrayBackend, result: Any, op: Optional[str], p: int) -> Any:
    """``result`` divided in place by the rank count where ``op`` is avg (float dtypes only: checked);
    the same array object is returned (it may be the caller's ``out``)."""
    if op in AVERAGING_OPS:
        backend.xp.divide(result, p, out=result)
    return result


def _planned(collective: str, x: Any, comm: Optional[Any], op: Optional[str],
             algorithm: str) -> tuple[Transport, _Plan]:
    """The communicator's transport and the call's plan (made on its shape's first call)."""
    transport = transport_for(comm, collective)
    try:
        return transport, transport.plans[(collective, type(x), x.shape, x.dtype, op, algorithm)]
    except (KeyError, AttributeError, TypeError):
        return transport, _new_plan(transport, collective, x, op, algorithm)


def _begin(transport: Transport, plan: _Plan, collective: str, x: Any, algorithm: str, validate: bool,
           out: Optional[Any]) -> str:
    """Check the arguments (with ``validate``, collectively: a rank's bad operand or ``out`` is then
    every rank's error) and resolve ``auto``."""
    problem = plan.problem
    if out is not None and problem is None:
        shape = plan.result_shape
        if shape is None:
            start, stop = _block(x, transport)
            shape = (stop - start,)
        problem = checked_out(collective, out, shape, x.dtype, plan.backend)
    if validate or problem is not None:
        begin(transport.comm, collective, problem, plan.fields, validate,
              plan.signed if problem is plan.problem else None)
    if plan.algorithm_error is not None:
        raise plan.algorithm_error.with_traceback(None)
    return plan.auto.get() if algorithm == "auto" else algorithm


_OP_KINDS = {"sum": "iufc", "max": "iuf", "min": "iuf", "avg": "fc"}
"""dtype kinds each op is defined for on every algorithm (MPI has no sum on booleans and no
order on complex numbers)."""


def _operand_problem(collective: str, x: Any, op: Optional[str]) -> Optional[Exception]:
    """What is wrong with ``op`` or the operand ``x`` (the same on every rank for the same call), or None."""
    if op is not None and op not in RING_OPS:
        return ValueError(f"{collective}: unknown reduction op {op!r}; expected one of {', '.join(RING_OPS)}")
    try:
        backend_of(x)
    except TypeError as error:
        return TypeError(f"{collective}: {error}")
    problem = unsendable(x.dtype)
    if problem is not None:
        return TypeError(f"{collective}: {problem}")
    if op in AVERAGING_OPS and np.dtype(x.dtype).kind not in _OP_KINDS[op]:
        return TypeError(f"{collective}: op 'avg' needs a floating or complex dtype (the mean of integers is no "
                         f"integer), got {x.dtype}; cast x to a float dtype first")
    if op is not None and np.dtype(x.dtype).kind not in _OP_KINDS[op]:
        return TypeError(f"{collective}: op {op!r} is not defined for dtype {x.dtype}")
    return None


_RING_COSTS = LinkMemo(ring_costs)
"""Per rank set, its ring's slowest link and the measured step costs (symmetric: one way suffices)."""
_RING_CHOICES = ChoiceMemo("rings", lambda costs, collective, nbytes, p: auto_choice(collective, nbytes, p, costs))
