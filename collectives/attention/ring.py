"""Ring attention: queries stay, each rank's K/V blocks travel the ring one hop per step while
the block in hand is attended to and merged into a running (out, lse)."""

from __future__ import annotations

from typing import Any, Optional

from mpi4py import MPI

from hpcrt.backends.arrays import get_xp

from hpcrt.collectives.attention.block import block_attention
from hpcrt.collectives.attention.lse_merge import lse_merge
from hpcrt.collectives.attention.seq_split import prepare_attention
from hpcrt.collectives.comm.tracing import traced
from hpcrt.collectives.comm.transport import wait_all
from hpcrt.core.tags import RING_ATTENTION_K, RING_ATTENTION_V


@traced("ring_attention")
def ring_attention(q: Any, k: Any, v: Any, *, comm: Optional[MPI.Intracomm] = None, causal: bool = False,
                   scale: Optional[float] = None, validate: bool = True) -> Any:
    """Softmax attention of this rank's queries over the whole split sequence.

    q, k: [..., T_local, d], v: [..., T_local, d_v]; rank i holds the i-th contiguous chunk of
    tokens, chunks may differ in length. ``causal`` masks by global position; ``scale``
    defaults to 1/√d. Returns [..., T_local, d_v] in q's dtype and backend.
    """
    call = prepare_attention("ring_attention", q, k, v, comm, causal, scale, validate)
    transport, split = call.transport, call.split
    p, r, xp = transport.size, transport.rank, get_xp(q)
    out = xp.zeros((*q.shape[:-1], v.shape[-1]), dtype=q.dtype)
    lse = xp.full(q.shape[:-1], -float("inf"), dtype=q.dtype)
    held = (k, v)
    for step in range(p):
        owner = (r - step) % p
        pending, incoming = [], None
        if step < p - 1:
            after = (r - step - 1) % p
            incoming = tuple(xp.empty((*a.shape[:-2], split.lengths[after], a.shape[-1]), dtype=a.dtype)
                             for a in (k, v))
            if split.lengths[after]:
                pending += [transport.irecv(incoming[0], (r - 1) % p, RING_ATTENTION_K),
                            transport.irecv(incoming[1], (r - 1) % p, RING_ATTENTION_V)]
            if split.lengths[owner]:
                pending += [transport.isend(held[0], (r + 1) % p, RING_ATTENTION_K),
                            transport.isend(held[1], (r + 1) % p, RING_ATTENTION_V)]
        if split.visible(r, owner, causal):
            part = block_attention(q, held[0], held[1], q_start=split.starts[r], k_start=split.starts[owner],
                                   causal=causal, scale=call.scale)
            lse_merge(out, lse, *part, out=(out, lse))
        wait_all(pending)
        held = incoming
    return out
