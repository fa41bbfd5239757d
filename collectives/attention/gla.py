"""Sequence-parallel gated linear attention (GLA) over All-Scan, forward and backward.

Each rank holds a contiguous chunk of the sequence: q, k [..., L, d_k], v [..., L, d_v] and
learnable log-decays (log-gates) [..., L, d_k] (per key dimension) or [..., L, 1] (one per
token), the leading dimensions a batch of independent problems. The recurrence is
S_t = diag(γ_t)·S_{t−1} + k_tᵀv_t, o_t = q_t·S_t with γ_t = exp(log_gates_t). A rank's state
from a zero start and its chunk decay form an affine pair; an exclusive All-Scan gives the state
entering the chunk while the intra-chunk part computes (ZeCO). The backward pass runs the same
with a reverse scan of the gradient state. A call checks agreement once and runs each scan once
for the whole batch.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Optional

import numpy as np

from mpi4py import MPI

from hpcrt.backends.arrays import backend_of, get_xp

from hpcrt.collectives.allscan.entry import AllScanHandle, all_scan, all_scan_start
from hpcrt.collectives.allscan.ops import AFFINE, ScanOp, flipped
from hpcrt.collectives.attention import gla_local
from hpcrt.collectives.comm.entry import begin, transport_for
from hpcrt.collectives.costmodel.allscan import ALGORITHMS

_BACKWARD_OP = flipped(AFFINE)


def _checked(name: str, comm: Any, arrays: tuple, algorithm: str, subchunk: Any,
             incoming_state: Optional[Any] = None) -> tuple:
    """(comm, log-gates broadcast to [..., L, d_k]) after one agreement check on every rank: a bad
    input or a call that differs across ranks raises on all of them instead of hanging a scan."""
    comm = transport_for(comm, name).comm
    q, _, v, log_gates = arrays[:4]
    problem = _local_problem(name, arrays, algorithm, subchunk, incoming_state)
    shaped = not isinstance(problem, _NotArrays) and q.ndim >= 2 and v.ndim >= 2
    begin(comm, name, problem, {
        "batch": q.shape[:-2] if shaped else None, "d_k": q.shape[-1] if shaped else None,
        "d_v": v.shape[-1] if shaped else None, "dtype": str(q.dtype) if shaped else None, "algorithm": algorithm,
        "incoming_state": None if incoming_state is None else np.shape(incoming_state)}, True)
    return comm, get_xp(q).broadcast_to(log_gates, q.shape)


class _NotArrays(TypeError):
    """An argument that is no array: nothing else about the call can be read from it."""


def _local_problem(name: str, arrays: tuple, algorithm: str, subchunk: Any,
                   incoming_state: Optional[Any]) -> Optional[Exception]:
    """What is wrong with this rank's arguments, found without communication, so that every
    rank reaches the agreement check."""
    try:
        for array in arrays:
            backend_of(array)
    except TypeError as error:
        return _NotArrays(f"{name}: {error}")
    q, k, v, log_gates, *more = arrays
    if not (q.ndim >= 2 and q.shape == k.shape and v.shape[:-1] == q.shape[:-1]
            and log_gates.shape in (q.shape, q.shape[:-1] + (1,)) and all(m.shape == v.shape for m in more)):
        return TypeError(f"{name}: need q, k [L, d_k], v{' and grad_out' if more else ''} [L, d_v], log_gates "
                         f"[L, d_k] or [L, 1], after the same leading batch dimensions; got q {q.shape}, "
                         f"k {k.shape}, v {v.shape}, log_gates {log_gates.shape}"
                         + "".join(f", grad_out {m.shape}" for m in more))
    if len({np.dtype(x.dtype) for x in arrays}) != 1 or np.dtype(q.dtype).kind != "f":
        return TypeError(f"{name}: q, k, v and log_gates need one floating dtype")
    if algorithm != "auto" and algorithm not in ALGORITHMS:
        return ValueError(f"{name}: unknown algorithm {algorithm!r}; choose auto or one of {', '.join(ALGORITHMS)}")
    if isinstance(subchunk, bool) or not isinstance(subchunk, Integral) or subchunk < 1:
        return ValueError(f"{name}: subchunk must be a positive integer, got {subchunk!r}")
    state_shape = _state_shape(q, v)
    if incoming_state is not None and np.shape(incoming_state) != state_shape:
        return ValueError(f"{name}: incoming_state must have shape {'[..., d_k, d_v]' if q.ndim > 2 else '[d_k, d_v]'}"
                          f" = {state_shape}, got {np.shape(incoming_state)}")
    if incoming_state is not None and getattr(incoming_state, "dtype", None) != q.dtype:
        return TypeError(f"{name}: incoming_state must have q's dtype {q.dtype}, "
                         f"got {getattr(incoming_state, 'dtype', type(incoming_state).__name__)}")
    return None


def _state_shape(q: Any, v: Any) -> tuple:
    """The shape of a call's states: [..., d_k, d_v]."""
    return (*q.shape[:-2], q.shape[-1], v.shape[-1])


def _transposed(x: Any) -> Any:
    """The matrices of a stack [..., m, n] transposed: [..., n, m]."""
    return get_xp(x).swapaxes(x, -1, -2)


def _chunk_pair(k: Any, v: Any, log_gates: Any) -> tuple:
    """(decay of the whole chunk [..., d_k, 1], state of the chunk from a zero start [..., d_k, d_v])."""
    xp = get_xp(k)
    total = log_gates.sum(axis=-2)
    to_end = xp.exp(total[..., None, :] - xp.cumsum(log_gates, axis=-2))
    return xp.exp(total)[..., None], _transposed(k * to_end) @ v


def _scan_pairs(pair: tuple, op: ScanOp, comm: Any, algorithm: str, reverse: bool = False) -> AllScanHandle:
    """Start the All-Scan of affine pairs stacked over the batch as one pair of [N·d_k]-row
    arrays: the op combines row by row, so the whole batch is one state (one message per
    pipeline block, which may cut it at any row)."""
    rows = tuple(x.reshape(-1, x.shape[-1]) for x in pair)
    return all_scan_start(rows, op, comm=comm, reverse=reverse, algorithm=algorithm, validate=False)


def gla_forward(q: Any, k: Any, v: Any, log_gates: Any, *, comm: Optional[MPI.Intracomm] = None,
                algorithm: str = "auto", subchunk: int = 16, return_state: bool = False) -> Any:
    """This rank's GLA outputs [..., L, d_v]; with ``return_state`` also the state entering its
    chunk [..., d_k, d_v], which :func:`gla_backward` can take instead of scanning for it again."""
    comm, log_gates = _checked("gla_forward", comm, (q, k, v, log_gates), algorithm, subchunk)
    xp = get_xp(q)
    scan = _scan_pairs(_chunk_pair(k, v, log_gates), AFFINE, comm, algorithm)
    out = gla_local.forward(gla_local.SubChunks.of(q, k, v, log_gates, subchunk))
    incoming = scan.wait()[1].reshape(_state_shape(q, v))
    out = out + (q * xp.exp(xp.cumsum(log_gates, axis=-2))) @ incoming
    return (out, incoming) if return_state else out


def gla_backward(q: Any, k: Any, v: Any, log_gates: Any, grad_out: Any, *, comm: Optional[MPI.Intracomm] = None,
                 algorithm: str = "auto", subchunk: int = 16, incoming_state: Optional[Any] = None) -> tuple:
    """Gradients (dq, dk, dv, dlog_gates) of a loss given ``grad_out`` = ∂loss/∂outputs
    [..., L, d_v]; dlog_gates has log_gates' shape."""
    comm, gates = _checked("gla_backward", comm, (q, k, v, log_gates, grad_out), algorithm, subchunk,
                           incoming_state)
    xp = get_xp(q)
    forward_scan = None
    if incoming_state is None:
        forward_scan = _scan_pairs(_chunk_pair(k, v, gates), AFFINE, comm, algorithm)
    decay_in = xp.exp(xp.cumsum(gates, axis=-2))  # from the chunk's start through each token
    total = gates.sum(axis=-2)
    # The gradient reaching the chunk's incoming state from its own tokens, and the chunk's decay.
    backward_scan = _scan_pairs((xp.exp(total)[..., None], _transposed(q * decay_in) @ grad_out), _BACKWARD_OP,
                                comm, algorithm, reverse=True)
    dq, dk, dv = gla_local.backward(gla_local.SubChunks.of(q, k, v, gates, subchunk), grad_out)
    state_shape = _state_shape(q, v)
    incoming = incoming_state if forward_scan is None else forward_scan.wait()[1].reshape(state_shape)
    outgoing = backward_scan.wait()[1].reshape(state_shape)  # the gradient reaching the chunk's end from later ranks
    to_end = xp.exp(total[..., None, :] - xp.cumsum(gates, axis=-2))
    dq = dq + decay_in * (grad_out @ _transposed(incoming))
    dk = dk + to_end * (v @ _transposed(outgoing))
    dv = dv + (k * to_end) @ outgoing
    # A log-gate scales everything after it: its gradient is the suffix sum of q⊙dq − k⊙dk.
    grad_cumulative = q * dq - k * dk
    later = all_scan(grad_cumulative.sum(axis=-2).reshape(-1), "sum", comm=comm, reverse=True, algorithm=algorithm,
                     validate=False).reshape(total.shape)
    dlog = xp.flip(xp.cumsum(xp.flip(grad_cumulative, -2), axis=-2), -2) + later[..., None, :]
    return dq, dk, dv, dlog.sum(axis=-1, keepdims=True) if log_gates.shape[-1] == 1 else dlog
