"""Gated linear attention inside one rank's chunk of tokens, from a zero incoming state, for any
leading batch dimensions: the chunk is cut into sub-chunks of c tokens; within a sub-chunk the
decays form a masked [..., c, c, d_k] tensor, across sub-chunks a serial scan carries the state
(every batch member at once). Every exponent is a sum of log-decays over a forward span (≤ 0 for
decays ≤ 1), so nothing overflows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpcrt.backends.arrays import get_xp


def cut(x: Any, size: int) -> Any:
    """[..., L, d] as [..., ⌈L/size⌉, size, d], zero-padded at the end."""
    xp = get_xp(x)
    *batch, length, width = x.shape
    count = -(-length // size)
    padding = xp.zeros((*batch, count * size - length, width), dtype=x.dtype)
    return xp.concatenate([x, padding], axis=-2).reshape(*batch, count, size, width)


@dataclass(frozen=True)
class SubChunks:
    """q, k, v and the log-decays of a chunk as [..., n, c, ·] sub-chunks, zero-padded at the end
    (padding has no key, no value and decay 1, so it changes nothing before it)."""

    q: Any
    k: Any
    v: Any
    within: Any
    """Cumulative log-decay inside each sub-chunk, through each token: [..., n, c, d_k]."""
    length: int

    @classmethod
    def of(cls, q: Any, k: Any, v: Any, log_gates: Any, size: int) -> "SubChunks":
        within = get_xp(q).cumsum(cut(log_gates, size), axis=-2)
        return cls(cut(q, size), cut(k, size), cut(v, size), within, q.shape[-2])

    @property
    def xp(self) -> Any:
        return get_xp(self.q)

    @property
    def total(self) -> Any:
        """Each sub-chunk's whole log-decay: [..., n, d_k]."""
        return self.within[..., -1, :]

    def to_end(self) -> Any:
        """exp(log-decay from after each token to its sub-chunk's end): [..., n, c, d_k]."""
        return self.xp.exp(self.total[..., None, :] - self.within)

    def decays(self) -> Any:
        """exp(within_t − within_s) for s ≤ t, 0 above the diagonal: [..., n, c(t), c(s), d_k]."""
        xp = self.xp
        size = self.within.shape[-2]
        causal = xp.tril(xp.ones((size, size), dtype=bool))[:, :, None]
        span = self.within[..., :, None, :] - self.within[..., None, :, :]
        return xp.exp(xp.where(causal, span, -xp.inf))

    def unpad(self, x: Any) -> Any:
        """[..., n, c, d] back to the chunk's [..., L, d]."""
        *batch, count, size, width = x.shape
        return x.reshape(*batch, count * size, width)[..., :self.length, :]


def serial_scan(log_decay: Any, states: Any) -> Any:
    """Exclusive prefix of carry ← exp(log_decay[..., m, :]) ⊙ carry + states[..., m, :, :] over
    m, from zero: [..., n, d_k, d_v] incoming carries (pass reversed inputs for a suffix)."""
    xp = get_xp(states)
    carries = xp.empty(states.shape, dtype=states.dtype)
    carry = xp.zeros(states.shape[:-3] + states.shape[-2:], dtype=states.dtype)
    decay = xp.exp(log_decay)[..., None]
    for m in range(states.shape[-3]):
        carries[..., m, :, :] = carry
        carry = decay[..., m, :, :] * carry + states[..., m, :, :]
    return carries


def _incoming_states(chunks: SubChunks) -> Any:
    """The state entering each sub-chunk from the earlier ones: [..., n, d_k, d_v]."""
    local = chunks.xp.einsum("...si,...sj->...ij", chunks.k * chunks.to_end(), chunks.v)
    return serial_scan(chunks.total, local)


def _outgoing_grads(chunks: SubChunks, grad_out: Any) -> Any:
    """The gradient reaching each sub-chunk's end state from the later ones: [..., n, d_k, d_v]."""
    xp = chunks.xp
    local = xp.einsum("...ti,...tj->...ij", chunks.q * xp.exp(chunks.within), grad_out)
    return xp.flip(serial_scan(xp.flip(chunks.total, -2), xp.flip(local, -3)), -3)


def _keys(chunks: SubChunks, decays: Any) -> Any:
    """decay(t, s) ⊙ k_s within each sub-chunk: [..., n, c(t), c(s), d_k]."""
    return decays * chunks.k[..., None, :, :]


def _scores(keys: Any, q: Any) -> Any:
    """q_t·(decay ⊙ k_s) within each sub-chunk from the decayed keys: [..., n, c(t), c(s)]."""
    return (keys @ q[..., None])[..., 0]


def forward(chunks: SubChunks) -> Any:
    """The chunk's outputs from a zero incoming state: [..., L, d_v]."""
    xp = chunks.xp
    out = _scores(_keys(chunks, chunks.decays()), chunks.q) @ chunks.v
    out += (chunks.q * xp.exp(chunks.within)) @ _incoming_states(chunks)
    return chunks.unpad(out)


def backward(chunks: SubChunks, grad_out: Any) -> tuple:
    """Gradients (dq, dk, dv) of the chunk's outputs from a zero incoming state, given
    ``grad_out`` [..., L, d_v] and no gradient from beyond the chunk."""
    xp = chunks.xp
    grad = cut(grad_out, chunks.q.shape[-2])
    decays = chunks.decays()
    keys, queries = _keys(chunks, decays), decays * chunks.q[..., :, None, :]
    grad_scores = grad @ xp.swapaxes(chunks.v, -1, -2)
    dq = (grad_scores[..., None, :] @ keys)[..., 0, :]
    dk = (xp.swapaxes(grad_scores, -1, -2)[..., None, :] @ xp.swapaxes(queries, -3, -2))[..., 0, :]
    dv = xp.swapaxes(_scores(keys, chunks.q), -1, -2) @ grad
    dq += xp.exp(chunks.within) * (grad @ xp.swapaxes(_incoming_states(chunks), -1, -2))
    to_end = chunks.to_end()
    outgoing = _outgoing_grads(chunks, grad)
    dk += to_end * (chunks.v @ xp.swapaxes(outgoing, -1, -2))
    dv += (chunks.k * to_end) @ outgoing
    return chunks.unpad(dq), chunks.unpad(dk), chunks.unpad(dv)
