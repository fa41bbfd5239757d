"""A sequence split across ranks for attention: who holds which tokens, and the argument checks
both attention schedules share (raised on every rank, never a deadlock)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Optional

from hpcrt.backends.arrays import backend_of

from hpcrt.collectives.attention.lse_merge import LSE_DTYPES
from hpcrt.collectives.comm.entry import begin, raise_on_every_rank, transport_for
from hpcrt.collectives.comm.transport import Transport


@dataclass(frozen=True)
class SequenceSplit:
    """Rank i holds the tokens ``[starts[i], starts[i] + lengths[i])`` of the global sequence."""

    lengths: tuple
    starts: tuple

    def visible(self, q_rank: int, k_rank: int, causal: bool) -> bool:
        """Whether any query of ``q_rank`` attends to any key of ``k_rank``."""
        tq, tk = self.lengths[q_rank], self.lengths[k_rank]
        if not (tq and tk):
            return False
        return not causal or self.starts[k_rank] <= self.starts[q_rank] + tq - 1


@dataclass(frozen=True)
class AttentionCall:
    """What both attention schedules start from."""

    transport: Transport
    split: SequenceSplit
    scale: float


def prepare_attention(name: str, q: Any, k: Any, v: Any, comm: Optional[Any], causal: bool,
                      scale: Optional[float], validate: bool) -> AttentionCall:
    """Check the local arrays and scale, gather every rank's token count and (``validate``) agreement."""
    transport = transport_for(comm, name)
    problem = _local_problem(q, k, v, scale)
    problems = transport.comm.allgather((problem, q.shape[-2] if problem is None else 0))  # the lengths are needed
    raise_on_every_rank(name, [problem for problem, _ in problems])
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    begin(transport.comm, name, None, {"heads": tuple(q.shape[:-2]), "d": q.shape[-1], "d_v": v.shape[-1],
                                       "dtype": str(q.dtype), "causal": bool(causal), "scale": float(scale)},
          validate)
    lengths = tuple(n for _, n in problems)
    starts = tuple(sum(lengths[:i]) for i in range(len(lengths)))
    return AttentionCall(transport, SequenceSplit(lengths, starts), float(scale))


def _local_problem(q: Any, k: Any, v: Any, scale: Optional[float]) -> Optional[tuple[type, str]]:
    """Why this rank's arguments cannot run, as (exception type, message), or None."""
    try:
        for array in (q, k, v):
            backend_of(array)
    except TypeError as error:
        return TypeError, str(error)
    if min(q.ndim, k.ndim, v.ndim) < 2:
        return ValueError, f"q, k, v need shape [..., T, d], got {q.shape}, {k.shape}, {v.shape}"
    if not (q.shape[:-1] == k.shape[:-1] == v.shape[:-1]) or q.shape[-1] != k.shape[-1]:
        return ValueError, f"q, k, v must share [..., T] and q, k their d: got {q.shape}, {k.shape}, {v.shape}"
    if q.shape[-1] == 0:
        return ValueError, f"q, k need a head dim d > 0, got shapes {q.shape}, {k.shape}"
    if not (q.dtype == k.dtype == v.dtype) or str(q.dtype) not in LSE_DTYPES:
        return TypeError, (f"q, k, v need one dtype of {', '.join(LSE_DTYPES)} (the kernels' dtypes), "
                           f"got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (backend_of(q) is backend_of(k) is backend_of(v)):
        return ValueError, "q, k, v must live on one backend"
    return _scale_problem(scale)


def _scale_problem(scale: Optional[float]) -> Optional[tuple[type, str]]:
    """Why ``scale`` is no usable softmax scale (None: the default 1/√d), or None."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, Real):
        return TypeError, f"scale must be a real number, got {scale!r}"
    value = float(scale)
    if not (math.isfinite(value) and value > 0):
        return ValueError, f"scale must be finite and positive, got {value}"
    return None
