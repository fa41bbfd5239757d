"""The reduction ops of the ring collectives: an element-wise function on any backend and the
matching MPI op for the ``mpi`` baseline. ``avg`` reduces as ``sum`` and is divided by the number
of ranks after (:data:`AVERAGING_OPS`; the ring collectives and the hierarchical partition take it)."""

from __future__ import annotations

from typing import Any, Callable

from mpi4py import MPI

from hpcrt.backends.arrays import get_xp

REDUCE_OPS = ("sum", "max", "min")
AVERAGING_OPS = ("avg",)
_UFUNCS = {"sum": "add", "max": "maximum", "min": "minimum", "avg": "add"}
_MPI_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "avg": MPI.SUM}


def check_op(op: str) -> None:
    if op not in REDUCE_OPS:
        raise ValueError(f"unknown reduction op {op!r}; expected one of {', '.join(REDUCE_OPS)}")


def combine_into(op: str) -> Callable[[Any, Any], None]:
    """A function ``f(acc, other)`` that folds ``other`` into ``acc`` in place."""
    name = _UFUNCS[op]

    def combine(acc: Any, other: Any) -> None:
        getattr(get_xp(acc), name)(acc, other, out=acc)

    return combine


def mpi_op(op: str) -> Any:
    return _MPI_OPS[op]
