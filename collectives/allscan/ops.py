"""Associative combine operators for All-Scan: sum, max, the affine pairs of the gated
linear-attention recurrence, and user-defined ones. None needs to be commutative."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from hpcrt.backends.arrays import backend_of, get_xp

from hpcrt.collectives.comm.transport import SENDABLE_KINDS, unsendable


@dataclass(frozen=True, eq=False)
class ScanOp:
    """An associative operator ``combine(lower, upper)`` (lower from the lower ranks) with an
    identity factory ``identity(x)`` that returns the identity shaped and typed like ``x``.

    ``rowwise`` says the combine acts on each index of the first axis on its own, so a pipeline
    may split the state into row blocks; ``check`` raises TypeError for inputs the op cannot take.
    ``combine_into(lower, upper, out)``, where given, writes the combine into ``out`` (a tuple of
    arrays, one per part, aliasing neither input), so a schedule can combine straight into its
    outgoing message instead of into a new array that it then copies.
    """

    combine: Callable[[Any, Any], Any]
    identity: Callable[[Any], Any]
    name: str = "user"
    rowwise: bool = False
    check: Optional[Callable[[Any], None]] = None
    combine_into: Optional[Callable[[Any, Any, tuple], None]] = None


def as_parts(x: Any) -> tuple:
    """The arrays of a scan operand: one array, or the members of a tuple/list of arrays."""
    parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    if not parts:
        raise TypeError("all_scan: the operand holds no array")
    backends = {backend_of(part).name for part in parts}
    if len(backends) > 1:
        raise TypeError(f"all_scan: the operand mixes array backends {sorted(backends)}")
    return parts


def from_parts(parts: tuple, like: Any) -> Any:
    """``parts`` in the structure of ``like``: an array, or a tuple of arrays."""
    return tuple(parts) if isinstance(like, (tuple, list)) else parts[0]


def check_sendable(parts: tuple) -> None:
    """TypeError for an array whose elements MPI cannot carry as values (:func:`.transport.unsendable`)."""
    for part in parts:
        problem = unsendable(part.dtype)
        if problem is not None:
            raise TypeError(f"all_scan: {problem}")


def _check_single(name: str, kinds: str) -> Callable[[Any], None]:
    """The check of an op on one array whose dtype is of ``kinds``."""
    def check(x: Any) -> None:
        if isinstance(x, (tuple, list)):
            raise TypeError(f"all_scan: op {name!r} takes one array, got a {type(x).__name__} of "
                            f"{len(x)}")
        backend_of(x)
        if np.dtype(x.dtype).kind not in kinds:
            raise TypeError(f"all_scan: op {name!r} is not defined for dtype {x.dtype}")
    return check


def _max_identity(x: Any) -> Any:
    dtype = np.dtype(x.dtype)
    if dtype.kind == "f":
        lowest: Any = -np.inf
    elif dtype.kind in "iu":
        lowest = np.iinfo(dtype).min
    elif dtype.kind == "b":
        lowest = False
    else:
        raise TypeError(f"all_scan: op 'max' has no identity for dtype {dtype}")
    return get_xp(x).full(x.shape, lowest, dtype=dtype)


def _check_affine(x: Any) -> None:
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise TypeError("all_scan: op 'affine' takes a pair (a, b) of arrays meaning y -> a*y + b, "
                        f"got {type(x).__name__}")
    a, b = as_parts(x)
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        shape = None
    if shape != b.shape:
        raise TypeError(f"all_scan: op 'affine' needs a broadcastable against b, got a of shape "
                        f"{a.shape} and b of shape {b.shape}")


def _affine_combine(lower: Any, upper: Any) -> tuple:
    (a1, b1), (a2, b2) = lower, upper
    return a1 * a2, a2 * b1 + b2


def _affine_combine_into(lower: Any, upper: Any, out: tuple) -> None:
    (a1, b1), (a2, b2) = lower, upper
    xp = get_xp(b2)
    xp.multiply(a1, a2, out=out[0])
    xp.multiply(a2, b1, out=out[1])
    xp.add(out[1], b2, out=out[1])


def _affine_identity(x: Any) -> tuple:
    a, b = x
    xp = get_xp(b)
    return xp.ones(a.shape, dtype=a.dtype), xp.zeros(b.shape, dtype=b.dtype)


SUM = ScanOp(lambda lower, upper: lower + upper, lambda x: get_xp(x).zeros(x.shape, dtype=x.dtype),
             "sum", rowwise=True, check=_check_single("sum", SENDABLE_KINDS),
             combine_into=lambda lower, upper, out: get_xp(lower).add(lower, upper, out=out[0]))
MAX = ScanOp(lambda lower, upper: get_xp(lower).maximum(lower, upper), _max_identity, "max",
             rowwise=True, check=_check_single("max", "biuf"),
             combine_into=lambda lower, upper, out: get_xp(lower).maximum(lower, upper, out=out[0]))
AFFINE = ScanOp(_affine_combine, _affine_identity, "affine", rowwise=True, check=_check_affine,
                combine_into=_affine_combine_into)
BUILTIN_OPS = {op.name: op for op in (SUM, MAX, AFFINE)}


def flipped(op: ScanOp) -> ScanOp:
    """The opposite operator, a ⊕' b = b ⊕ a: a reverse scan with it applies the higher ranks'
    operands first (the backward pass of a recurrence runs from the last rank down)."""
    into = op.combine_into
    return ScanOp(lambda lower, upper: op.combine(upper, lower), op.identity, f"flipped({op.name})",
                  op.rowwise, op.check,
                  None if into is None else (lambda lower, upper, out: into(upper, lower, out)))


def resolve_op(op: Any) -> ScanOp:
    """A :class:`ScanOp` from a builtin name, a ScanOp, or any object with ``combine`` and
    ``identity`` methods (and optionally ``name`` and ``rowwise``)."""
    if isinstance(op, ScanOp):
        return op
    if isinstance(op, str):
        if op not in BUILTIN_OPS:
            raise ValueError(f"all_scan: unknown op {op!r}; builtin ops are {sorted(BUILTIN_OPS)}")
        return BUILTIN_OPS[op]
    if callable(getattr(op, "combine", None)) and callable(getattr(op, "identity", None)):
        return ScanOp(op.combine, op.identity, getattr(op, "name", type(op).__name__),
                      bool(getattr(op, "rowwise", False)))
    raise TypeError(f"all_scan: op must be 'sum', 'max', 'affine' or a ScanOp, got {type(op).__name__}")
