"""Ring attention and TokenRing attention over a sequence split across ranks equal single-rank
softmax attention (causal or not, even or uneven chunks); their exact per-link bytes; bad input."""

import re

import numpy as np
import pytest

import hpcrt
from hpcrt.collectives import count_link_bytes, ring_attention, token_ring_attention

from array_backends import BACKENDS, to_host

SCHEDULES = {"ring": ring_attention, "token_ring": token_ring_attention}
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-10}


def softmax_attention(q, k, v, causal: bool) -> np.ndarray:
    """The reference: plain softmax attention over the whole sequence on one rank."""
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        t = q.shape[-2]
        scores = np.where(np.triu(np.ones((t, t), dtype=bool), 1), -np.inf, scores)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)) @ v


def layouts(p: int) -> dict:
    """Token counts per rank: equal chunks, uneven chunks, and chunks with an empty rank."""
    return {"equal": [6] * p, "uneven": [5 + 3 * i for i in range(p)],
            "with_empty": [4, 0, 7, 1][:p] if p > 1 else [3]}


def full_sequence(seed: int, heads: tuple, total: int, dtype) -> tuple:
    rng = np.random.default_rng(seed)
    d, d_v = 8, 5
    return tuple(rng.standard_normal((*heads, total, width)).astype(dtype) for width in (d, d, d_v))


def assert_no_errors(comm, errors: list) -> None:
    everyone = comm.allgather(errors)
    assert not any(everyone), [(rank, e) for rank, errs in enumerate(everyone) for e in errs[:5]]


@pytest.mark.mpi(ranks=[1, 2, 3, 4], timeout=120)
def test_attention_equals_single_rank_softmax(comm):
    hpcrt.init({"log_files": False})
    p, r = comm.size, comm.rank
    errors, seed = [], 0
    for layout, lengths in layouts(p).items():
        start = sum(lengths[:r])
        mine = slice(start, start + lengths[r])
        for heads in ((), (3,)):
            for dtype, tol in TOLERANCE.items():
                seed += 1
                q, k, v = full_sequence(seed, heads, sum(lengths), dtype)
                for causal in (False, True):
                    want = softmax_attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64),
                                             causal)[..., mine, :]
                    for backend, convert in BACKENDS.items():
                        for name, schedule in SCHEDULES.items():
                            got = schedule(convert(q[..., mine, :]), convert(k[..., mine, :]),
                                           convert(v[..., mine, :]), comm=comm, causal=causal)
                            label = f"{name} {layout} heads={heads} {np.dtype(dtype).name} causal={causal} {backend}"
                            host = to_host(got)
                            if type(got) is not type(convert(q)) or host.dtype != dtype or host.shape != want.shape:
                                errors.append(f"{label}: got {type(got).__name__} {host.dtype} {host.shape}")
                            elif not np.allclose(host, want, rtol=tol, atol=tol):
                                errors.append(f"{label}: off by {np.abs(host - want).max():.2e}")
    assert_no_errors(comm, errors)


@pytest.mark.mpi(ranks=[3, 4], timeout=60)
def test_attention_link_bytes(comm):
    rt = hpcrt.init({"log_files": False})
    p, r = comm.size, comm.rank
    right = (r + 1) % p
    lengths = [5 + 3 * i for i in range(p)]
    start = sum(lengths[:r])
    q, k, v = (a[:, start:start + lengths[r]] for a in full_sequence(0, (2,), sum(lengths), np.float64))
    item, heads, d, d_v = 8, 2, q.shape[-1], v.shape[-1]

    def q_bytes(owner):
        return heads * lengths[owner] * d * item

    def partial_bytes(owner):  # out [heads, T, d_v] and lse [heads, T]
        return heads * lengths[owner] * (d_v + 1) * item

    for causal in (False, True):
        with count_link_bytes() as ring:
            ring_attention(q, k, v, comm=rt.comm, causal=causal)
        # K and V of every rank but the right neighbour travel one hop to the right
        assert ring.sent == {(r, right): sum(heads * lengths[o] * (d + d_v) * item for o in range(p) if o != right)}

        with count_link_bytes() as token:
            token_ring_attention(q, k, v, comm=rt.comm, causal=causal)
        # each rank forwards the Q of every rank but its right neighbour one hop; it sends the
        # partial of each visiting Q straight back to its owner (for causal: only the owners
        # whose queries come after this rank's keys)
        owners = [o for o in range(p) if o != r and (not causal or o > r)]
        want = {(r, o): partial_bytes(o) for o in owners}
        want[(r, right)] = want.get((r, right), 0) + sum(q_bytes(o) for o in range(p) if o != right)
        assert token.sent == want


def assert_still_correct(comm, schedule) -> None:
    """After refused calls, a good one equals the single-rank reference: nothing was left in flight."""
    q, k, v = full_sequence(99, (), 4 * comm.size, np.float64)
    mine = slice(4 * comm.rank, 4 * comm.rank + 4)
    got = schedule(q[mine], k[mine], v[mine], comm=comm, causal=True)
    np.testing.assert_allclose(got, softmax_attention(q, k, v, True)[mine], rtol=TOLERANCE[np.float64], atol=0)


@pytest.mark.mpi(ranks=[2], timeout=30)
def test_bad_input_is_an_error_on_every_rank(comm):
    hpcrt.init({"log_files": False})
    q = np.zeros((4, 8))
    for schedule in SCHEDULES.values():
        with pytest.raises(ValueError, match="rank 1: q, k, v must share"):
            schedule(q, np.zeros((4, 7)) if comm.rank == 1 else q, q, comm=comm)
        with pytest.raises(ValueError, match="disagree on d_v"):
            schedule(q, q, np.zeros((4, 3)) if comm.rank == 1 else q, comm=comm)
        with pytest.raises(TypeError, match="need one dtype of float32, float64"):
            schedule(q.astype(np.int64), q.astype(np.int64), q.astype(np.int64), comm=comm)
        with pytest.raises(TypeError, match="rank 1: expected a numpy or CuPy array, got list"):
            schedule(q.tolist() if comm.rank == 1 else q, q, q, comm=comm)
        with pytest.raises(TypeError, match="scale must be a real number, got '0.5'"):
            schedule(q, q, q, comm=comm, scale="0.5")
        assert_still_correct(comm, schedule)


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_what_the_kernels_cannot_run_is_refused_on_every_rank(comm):
    hpcrt.init({"log_files": False})
    q = np.zeros((4, 8))
    half = q.astype(np.float16)
    for schedule in SCHEDULES.values():
        with pytest.raises(TypeError, match="rank 0: q, k, v need one dtype of float32, float64"):
            schedule(half, half, half, comm=comm)
        with pytest.raises(TypeError, match="rank 1: q, k, v need one dtype of float32, float64 .*got float16"):
            schedule(*(half if comm.rank == 1 else q.astype(np.float32),) * 3, comm=comm)
        for scale in (float("nan"), float("inf"), 0.0, -1.0):
            with pytest.raises(ValueError, match="rank 0: scale must be finite and positive"):
                schedule(q, q, q, comm=comm, scale=scale)
        with pytest.raises(ValueError, match="rank 1: scale must be finite and positive, got nan"):
            schedule(q, q, q, comm=comm, scale=float("nan") if comm.rank == 1 else 0.5)
        no_d = np.zeros((4, 0))
        with pytest.raises(ValueError, match=re.escape(
                "rank 0: q, k need a head dim d > 0, got shapes (4, 0), (4, 0)")):
            schedule(no_d, no_d, q, comm=comm)
        with pytest.raises(TypeError, match="rank 1: expected a numpy or CuPy array, got list"):
            schedule(q.tolist() if comm.rank == 1 else q, q, q, comm=comm)
        with pytest.raises(TypeError, match="scale must be a real number, got '0.5'"):
            schedule(q, q, q, comm=comm, scale="0.5")
        assert_still_correct(comm, schedule)
