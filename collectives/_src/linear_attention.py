"""Sequence-parallel gated linear attention (GLA) over All-Scan, forward and backward.

Each rank holds a contiguous chunk of the sequence: q, k [L, d_k], v [L, d_v] and learnable
log-decays (log-gates) [L, d_k] (per key dimension) or [L, 1] (one per token). The recurrence is
S_t = diag(γ_t)·S_{t−1} + k_tᵀv_t, o_t = q_t·S_t with γ_t = exp(log_gates_t). A rank's state
from a zero start and its chunk decay form an affine pair; an exclusive All-Scan gives the state
entering the chunk while the intra-chunk part computes (ZeCO). The backward pass runs the same
with a reverse scan of the gradient state.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Optional

import numpy as np

from hpcrt._src.backends import backend_of, get_xp
from hpcrt._src.runtime import get_runtime

from . import gla_local
from .agreement import check_agreement
from .allscan import all_scan, all_scan_start
from .allscan_cost import ALGORITHMS
from .scanops import AFFINE, flipped

_BACKWARD_OP = flipped(AFFINE)


def _checked(name: str, comm: Any, arrays: tuple, algorithm: str, subchunk: Any,
             incoming_state: Optional[Any] = None) -> tuple:
    """(comm, log-gates broadcast to [L, d_k]) after one agreement check on every rank: a bad
    input or a call that differs across ranks raises on all of them instead of hanging a scan."""
    comm = comm if comm is not None else get_runtime().comm
    q, _, v, log_gates = arrays[:4]
    problem = _local_problem(name, arrays, algorithm, subchunk, incoming_state)
    shaped = not isinstance(problem, _NotArrays) and q.ndim == v.ndim == 2
    check_agreement(comm, name, input_error=None if problem is None else str(problem),
                    d_k=q.shape[1] if shaped else None, d_v=v.shape[1] if shaped else None,
                    dtype=str(q.dtype) if shaped else None, algorithm=algorithm,
                    incoming_state=None if incoming_state is None else np.shape(incoming_state))
    if problem is not None:
        raise problem
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
    if not (q.ndim == k.ndim == v.ndim == log_gates.ndim == 2 and q.shape == k.shape
            and len(v) == len(q) and log_gates.shape in ((len(q), q.shape[1]), (len(q), 1))
            and all(m.ndim == 2 and m.shape == v.shape for m in more)):
        return TypeError(f"{name}: need q, k [L, d_k], v{' and grad_out' if more else ''} [L, d_v], log_gates "
                         f"[L, d_k] or [L, 1]; got q {q.shape}, k {k.shape}, v {v.shape}, log_gates "
                         f"{log_gates.shape}" + "".join(f", grad_out {m.shape}" for m in more))
    if len({np.dtype(x.dtype) for x in arrays}) != 1 or np.dtype(q.dtype).kind != "f":
        return TypeError(f"{name}: q, k, v and log_gates need one floating dtype")
    if algorithm != "auto" and algorithm not in ALGORITHMS:
        return ValueError(f"{name}: unknown algorithm {algorithm!r}; choose auto or one of {', '.join(ALGORITHMS)}")
    if isinstance(subchunk, bool) or not isinstance(subchunk, Integral) or subchunk < 1:
        return ValueError(f"{name}: subchunk must be a positive integer, got {subchunk!r}")
    if incoming_state is not None and np.shape(incoming_state) != (q.shape[1], v.shape[1]):
        return ValueError(f"{name}: incoming_state must have shape [d_k, d_v] = {(q.shape[1], v.shape[1])}, "
                          f"got {np.shape(incoming_state)}")
    if incoming_state is not None and getattr(incoming_state, "dtype", None) != q.dtype:
        return TypeError(f"{name}: incoming_state must have q's dtype {q.dtype}, "
                         f"got {getattr(incoming_state, 'dtype', type(incoming_state).__name__)}")
    return None


def _chunk_pair(k: Any, v: Any, log_gates: Any) -> tuple:
    """(decay of the whole chunk [d_k, 1], state of the chunk from a zero start [d_k, d_v])."""
    xp = get_xp(k)
    total = log_gates.sum(axis=0)
    to_end = xp.exp(total - xp.cumsum(log_gates, axis=0))
    return xp.exp(total)[:, None], (k * to_end).T @ v


def gla_forward(q: Any, k: Any, v: Any, log_gates: Any, *, comm: Any = None, algorithm: str = "auto",
                subchunk: int = 16, return_state: bool = False) -> Any:
    """This rank's GLA outputs [L, d_v]; with ``return_state`` also the state entering its chunk
    [d_k, d_v], which :func:`gla_backward` can take instead of scanning for it again."""
    comm, log_gates = _checked("gla_forward", comm, (q, k, v, log_gates), algorithm, subchunk)
    xp = get_xp(q)
    scan = all_scan_start(_chunk_pair(k, v, log_gates), "affine", comm=comm, algorithm=algorithm, validate=False)
    out = gla_local.forward(gla_local.SubChunks.of(q, k, v, log_gates, subchunk))
    _, incoming = scan.wait()
    out = out + (q * xp.exp(xp.cumsum(log_gates, axis=0))) @ incoming
    return (out, incoming) if return_state else out


def gla_backward(q: Any, k: Any, v: Any, log_gates: Any, grad_out: Any, *, comm: Any = None,
                 algorithm: str = "auto", subchunk: int = 16, incoming_state: Optional[Any] = None) -> tuple:
    """Gradients (dq, dk, dv, dlog_gates) of a loss given ``grad_out`` = ∂loss/∂outputs [L, d_v];
    dlog_gates has log_gates' shape."""
    comm, gates = _checked("gla_backward", comm, (q, k, v, log_gates, grad_out), algorithm, subchunk,
                           incoming_state)
    xp = get_xp(q)
    forward_scan = None if incoming_state is not None else all_scan_start(
        _chunk_pair(k, v, gates), "affine", comm=comm, algorithm=algorithm, validate=False)
    decay_in = xp.exp(xp.cumsum(gates, axis=0))  # from the chunk's start through each token
    total = gates.sum(axis=0)
    # The gradient reaching the chunk's incoming state from its own tokens, and the chunk's decay.
    backward_scan = all_scan_start((xp.exp(total)[:, None], (q * decay_in).T @ grad_out), _BACKWARD_OP,
                                   comm=comm, reverse=True, algorithm=algorithm, validate=False)
    dq, dk, dv = gla_local.backward(gla_local.SubChunks.of(q, k, v, gates, subchunk), grad_out)
    incoming = incoming_state if incoming_state is not None else forward_scan.wait()[1]
    _, outgoing = backward_scan.wait()  # the gradient reaching the chunk's end state from later ranks
    to_end = xp.exp(total - xp.cumsum(gates, axis=0))
    dq = dq + decay_in * (grad_out @ incoming.T)
    dk = dk + to_end * (v @ outgoing.T)
    dv = dv + (k * to_end) @ outgoing
    # A log-gate scales everything after it: its gradient is the suffix sum of q⊙dq − k⊙dk.
    grad_cumulative = q * dq - k * dk
    later = all_scan(grad_cumulative.sum(axis=0), "sum", comm=comm, reverse=True, algorithm=algorithm,
                     validate=False)
    dlog = xp.flip(xp.cumsum(xp.flip(grad_cumulative, 0), axis=0), 0) + later
    return dq, dk, dv, dlog.sum(axis=1, keepdims=True) if log_gates.shape[1] == 1 else dlog
