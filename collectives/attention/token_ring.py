"""TokenRing attention: K and V never move. Each step every query block moves one hop forward;
the holder attends it to its keys and sends the partial (out, lse) straight back to the
query's owner, which merges the partials by the LSE rule. Forward queries and returning
partials are non-blocking, so both directions overlap the block computations."""

from __future__ import annotations

from typing import Any, Optional

from mpi4py import MPI

from hpcrt.backends.arrays import get_xp

from hpcrt.collectives.attention.block import block_attention
from hpcrt.collectives.attention.lse_merge import lse_merge
from hpcrt.collectives.attention.seq_split import prepare_attention
from hpcrt.collectives.comm.tracing import traced
from hpcrt.collectives.comm.transport import wait_all
from hpcrt.core.tags import TOKEN_RING_LSE, TOKEN_RING_OUT, TOKEN_RING_Q


@traced("token_ring_attention")
def token_ring_attention(q: Any, k: Any, v: Any, *, comm: Optional[MPI.Intracomm] = None, causal: bool = False,
                         scale: Optional[float] = None, validate: bool = True) -> Any:
    """Softmax attention of this rank's queries over the whole split sequence (same arguments
    and result as :func:`ring_attention`)."""
    call = prepare_attention("token_ring_attention", q, k, v, comm, causal, scale, validate)
    transport, split = call.transport, call.split
    p, r, xp = transport.size, transport.rank, get_xp(q)
    out_shape = (*q.shape[:-1], v.shape[-1])
    out = xp.zeros(out_shape, dtype=q.dtype)
    lse = xp.full(q.shape[:-1], -float("inf"), dtype=q.dtype)
    returns = {}  # step -> (out, lse, receives) of my queries' partial computed by rank r + step
    for step in range(1, p):
        holder = (r + step) % p
        if split.visible(r, holder, causal):
            part = (xp.empty(out_shape, dtype=q.dtype), xp.empty(q.shape[:-1], dtype=q.dtype))
            returns[step] = (*part, [transport.irecv(part[0], holder, TOKEN_RING_OUT),
                                     transport.irecv(part[1], holder, TOKEN_RING_LSE)])

    def merge_returned(step: int) -> None:
        if step in returns:
            o, part_lse, receives = returns.pop(step)
            wait_all(receives)
            lse_merge(out, lse, o, part_lse, out=(out, lse))

    visiting, sent_back = q, []
    for step in range(p):
        owner = (r - step) % p
        forward, incoming = [], None
        if step < p - 1:
            after = (r - step - 1) % p
            incoming = xp.empty((*q.shape[:-2], split.lengths[after], q.shape[-1]), dtype=q.dtype)
            if split.lengths[after]:
                forward.append(transport.irecv(incoming, (r - 1) % p, TOKEN_RING_Q))
            if split.lengths[owner]:
                forward.append(transport.isend(visiting, (r + 1) % p, TOKEN_RING_Q))
        if split.visible(owner, r, causal):
            o, part_lse = block_attention(visiting, k, v, q_start=split.starts[owner],
                                          k_start=split.starts[r], causal=causal, scale=call.scale)
            if owner == r:
                lse_merge(out, lse, o, part_lse, out=(out, lse))
            else:
                sent_back += [transport.isend(o, owner, TOKEN_RING_OUT),
                              transport.isend(part_lse, owner, TOKEN_RING_LSE)]
        merge_returned(step - 1)
        wait_all(forward)
        visiting = incoming
    merge_returned(p - 1)
    wait_all(sent_back)
    return out
