"""A sequence split across ranks for attention: who holds which tokens, and the argument checks
both attention schedules share (raised on every rank, never a deadlock)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from hpcrt._src.backends import backend_of

from .agreement import check_agreement
from .transport import Transport


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
    """Check the local arrays, gather every rank's token count and (``validate``) agreement."""
    transport = Transport(comm)
    problems = transport.comm.allgather((_local_problem(q, k, v), q.shape[-2] if q.ndim >= 2 else 0))
    bad = [f"rank {rank}: {problem}" for rank, (problem, _) in enumerate(problems) if problem]
    if bad:
        raise ValueError(f"{name}: " + "; ".join(bad))
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if validate:
        check_agreement(transport.comm, name, heads=tuple(q.shape[:-2]), d=q.shape[-1], d_v=v.shape[-1],
                        dtype=str(q.dtype), causal=bool(causal), scale=float(scale))
    lengths = tuple(n for _, n in problems)
    starts = tuple(sum(lengths[:i]) for i in range(len(lengths)))
    return AttentionCall(transport, SequenceSplit(lengths, starts), float(scale))


def _local_problem(q: Any, k: Any, v: Any) -> Optional[str]:
    if min(q.ndim, k.ndim, v.ndim) < 2:
        return f"q, k, v need shape [..., T, d], got {q.shape}, {k.shape}, {v.shape}"
    if not (q.shape[:-1] == k.shape[:-1] == v.shape[:-1]) or q.shape[-1] != k.shape[-1]:
        return f"q, k, v must share [..., T] and q, k their d: got {q.shape}, {k.shape}, {v.shape}"
    if not (q.dtype == k.dtype == v.dtype) or q.dtype.kind != "f":
        return f"q, k, v need one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
    if not (backend_of(q) is backend_of(k) is backend_of(v)):
        return "q, k, v must live on one backend"
    return None
