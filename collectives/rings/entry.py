"""allreduce, allgather and reduce_scatter with the ring, bidirectional-ring and MPI algorithms.

``ring``: one clockwise lane (allreduce = reduce-scatter then all-gather, p − 1 steps each);
``bidir_ring``: from three ranks every block goes both ways at once, half the ring round each, so
each link direction carries half the bytes and a phase takes ⌊p/2⌋ steps (at two, the ring's
schedule: both ways lead to the one neighbour); ``mpi``: the plain MPI call;
``auto``: the smallest α-β prediction (:mod:`.ring_cost`): the ring's slowest link, and the
ring algorithms' steps as the job measured them where it did.
Every algorithm returns a new array on the input's backend and leaves the input untouched; max
and min propagate NaN (numpy's maximum/minimum) on all of them, the same on every rank.
``validate=True`` first checks that all ranks agree on shape, dtype, op and algorithm; with
``validate=False`` ranks that disagree may deadlock.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from hpcrt.backends.arrays import backend_of, get_xp

from hpcrt.collectives.comm.agreement import check_agreement
from hpcrt.collectives.comm.blocks import block_bounds
from hpcrt.collectives.comm.reduce_ops import REDUCE_OPS, combine_into
from hpcrt.collectives.comm.tracing import traced
from hpcrt.collectives.comm.transport import Transport, unsendable
from hpcrt.collectives.costmodel.memo import ChoiceMemo, LinkMemo
from hpcrt.collectives.costmodel.rings import ALGORITHMS, RING_COLLECTIVES, auto_choice, ring_costs
from hpcrt.collectives.rings.engine import ring_lanes, ring_pass
from hpcrt.collectives.rings.mpi import mpi_allgather, mpi_allreduce, mpi_reduce_scatter


@traced("allreduce")
def allreduce(x: Any, op: str = "sum", *, comm: Optional[Any] = None, algorithm: str = "auto",
              validate: bool = True) -> Any:
    """Every rank gets the element-wise ``op`` (sum, max, min) of all ranks' ``x``, same shape."""
    transport, algorithm = _begin("allreduce", x, comm, algorithm, validate, op)
    if algorithm == "mpi":
        return mpi_allreduce(transport.comm, transport.staging, x, op)
    work = x.flatten()
    if transport.size > 1 and work.size:
        lanes = ring_lanes(block_bounds(work.size, transport.size), algorithm)
        ring_pass(transport, work, lanes, combine=combine_into(op))
        ring_pass(transport, work, lanes)
    return work.reshape(x.shape)


@traced("allgather")
def allgather(x: Any, *, comm: Optional[Any] = None, algorithm: str = "auto", validate: bool = True) -> Any:
    """All ranks' ``x`` (same shape everywhere) concatenated along axis 0 in rank order.

    A 0-d ``x`` counts as shape (1,): the result then has shape (p,).
    """
    transport, algorithm = _begin("allgather", x, comm, algorithm, validate, None)
    p = transport.size
    shape = (p * x.shape[0], *x.shape[1:]) if x.ndim else (p,)
    if algorithm == "mpi":
        return mpi_allgather(transport.comm, transport.staging, x, shape)
    m, r = x.size, transport.rank
    work = get_xp(x).empty(p * m, dtype=x.dtype)
    work[r * m:(r + 1) * m] = x.reshape(-1)
    if p > 1 and m:
        ring_pass(transport, work, ring_lanes([(i * m, (i + 1) * m) for i in range(p)], algorithm))
    return work.reshape(shape)


@traced("reduce_scatter")
def reduce_scatter(x: Any, op: str = "sum", *, comm: Optional[Any] = None, algorithm: str = "auto",
                   validate: bool = True) -> Any:
    """Rank r gets block r (1-D) of the element-wise ``op`` of all ranks' flattened ``x``.

    Blocks follow :func:`block_bounds` (numpy.array_split's rule): sizes need not divide evenly.
    """
    transport, algorithm = _begin("reduce_scatter", x, comm, algorithm, validate, op)
    if algorithm == "mpi":
        return mpi_reduce_scatter(transport.comm, transport.staging, x, op)
    work = x.flatten()
    bounds = block_bounds(work.size, transport.size)
    if transport.size > 1 and work.size:
        ring_pass(transport, work, ring_lanes(bounds, algorithm), combine=combine_into(op))
    start, stop = bounds[transport.rank]
    return work[start:stop].copy()


def ring_choice(collective: str, x: Any, *, comm: Optional[Any] = None) -> str:
    """The algorithm ``collective(x, algorithm="auto")`` runs on ``comm`` (allreduce, allgather or
    reduce_scatter): the cost model's choice, the same on every rank. Local: sends nothing."""
    if collective not in RING_COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r}; expected one of {RING_COLLECTIVES}")
    return _auto(collective, x, Transport(comm, collective))


def _model_bytes(collective: str, x: Any, p: int) -> int:
    """The buffer the model prices: the gathered result for allgather, the input otherwise."""
    return p * x.nbytes if collective == "allgather" else x.nbytes


def _begin(collective: str, x: Any, comm: Optional[Any], algorithm: str, validate: bool,
           op: Optional[str]) -> tuple[Transport, str]:
    """Check the arguments (with ``validate``, collectively: a rank's bad operand is then every
    rank's error) and resolve ``auto``."""
    transport = Transport(comm, collective)
    problem = _operand_problem(collective, x, op)
    if validate:
        fields = {"input_error": None if problem is None else str(problem), "algorithm": algorithm}
        if problem is None:
            fields.update(shape=tuple(x.shape), dtype=str(x.dtype))
        if op is not None:
            fields["op"] = op
        check_agreement(transport.comm, collective, **fields)
    if problem is not None:
        raise problem
    if algorithm == "auto":
        return transport, _auto(collective, x, transport)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{collective}: unknown algorithm {algorithm!r}; expected auto or one of {ALGORITHMS}")
    return transport, algorithm


_OP_KINDS = {"sum": "iufc", "max": "iuf", "min": "iuf"}
"""dtype kinds each op is defined for on every algorithm (MPI has no sum on booleans and no
order on complex numbers)."""


def _operand_problem(collective: str, x: Any, op: Optional[str]) -> Optional[Exception]:
    """What is wrong with ``op`` or the operand ``x`` (the same on every rank for the same call), or None."""
    if op is not None and op not in REDUCE_OPS:
        return ValueError(f"{collective}: unknown reduction op {op!r}; expected one of {', '.join(REDUCE_OPS)}")
    try:
        backend_of(x)
    except TypeError as error:
        return TypeError(f"{collective}: {error}")
    problem = unsendable(x.dtype)
    if problem is not None:
        return TypeError(f"{collective}: {problem}")
    if op is not None and np.dtype(x.dtype).kind not in _OP_KINDS[op]:
        return TypeError(f"{collective}: op {op!r} is not defined for dtype {x.dtype}")
    return None


_RING_COSTS = LinkMemo(ring_costs)
"""Per rank set, its ring's slowest link and the measured step costs (symmetric: one way suffices)."""
_RING_CHOICES = ChoiceMemo("rings", lambda costs, collective, nbytes, p: auto_choice(collective, nbytes, p, costs))


def _auto(collective: str, x: Any, transport: Transport) -> str:
    """The algorithm the cost model picks for ``collective`` on ``x`` over ``transport``'s ranks."""
    return _RING_CHOICES.get(_RING_COSTS.get(transport.world_ranks), collective,
                             _model_bytes(collective, x, transport.size), transport.size)
