"""Sequence-parallel gated linear attention against the single-rank recurrence S_t = γ_t⊙S_{t−1}
+ k_tᵀv_t, o_t = q_t·S_t run token by token in numpy, and its gradients against finite
differences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from array_backends import rotating_backend, to_backend, to_host
from conftest import assert_no_failures


def reference_forward(q, k, v, log_gates):
    """Outputs [T, d_v] and the state after every token [T, d_k, d_v], token by token."""
    gates = np.exp(np.broadcast_to(log_gates, q.shape))
    state = np.zeros((q.shape[1], v.shape[1]))
    out, states = np.empty((len(q), v.shape[1])), np.empty((len(q), q.shape[1], v.shape[1]))
    for t in range(len(q)):
        state = gates[t][:, None] * state + np.outer(k[t], v[t])
        out[t], states[t] = q[t] @ state, state
    return out, states


def reference_backward(q, k, v, log_gates, grad_out):
    """(dq, dk, dv, dlog_gates) by reverse-mode through the token-by-token recurrence."""
    gates = np.exp(np.broadcast_to(log_gates, q.shape))
    _, states = reference_forward(q, k, v, log_gates)
    dq, dk, dv, dgates = (np.empty_like(x) for x in (q, k, v, gates))
    grad_state = np.zeros(states.shape[1:])
    for t in reversed(range(len(q))):
        grad_state = grad_state + np.outer(q[t], grad_out[t])
        dq[t] = states[t] @ grad_out[t]
        dk[t] = grad_state @ v[t]
        dv[t] = grad_state.T @ k[t]
        dgates[t] = (grad_state * (states[t - 1] if t else 0)).sum(axis=1)
        grad_state = gates[t][:, None] * grad_state
    dlog = dgates * gates
    return dq, dk, dv, (dlog.sum(axis=1, keepdims=True) if log_gates.shape[1] == 1 else dlog)


def _problem(length, d_k, d_v, gate_width, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, length, d_k))
    v, grad_out = rng.standard_normal((2, length, d_v))
    log_gates = np.log(rng.uniform(0.7, 1.0, (length, gate_width)))
    return tuple(x.astype(dtype) for x in (q, k, v, log_gates, grad_out))


def _numeric_gradient(loss, x, eps=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + eps
        up = loss()
        x[index] = saved - eps
        down = loss()
        x[index] = saved
        grad[index] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("gate_width", [1, 3])
def test_reference_gradients_match_finite_differences(gate_width):
    q, k, v, log_gates, grad_out = _problem(6, 3, 2, gate_width, seed=gate_width)
    analytic = reference_backward(q, k, v, log_gates, grad_out)
    for x, grad in zip((q, k, v, log_gates), analytic):
        numeric = _numeric_gradient(lambda: float((reference_forward(q, k, v, log_gates)[0] * grad_out).sum()), x)
        assert np.allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def _split(length, size, seed):
    """Uneven contiguous chunk bounds per rank; for every third seed one rank holds no tokens."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(1, 4, size)
    if size > 1 and seed % 3 == 0:
        weights[seed % size] = 0
    bounds = np.rint(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * length).astype(int)
    return list(zip(bounds[:-1], bounds[1:]))


@pytest.mark.mpi(ranks=[1, 2, 3, 4], timeout=120)
def test_gla_matches_single_rank_recurrence(comm):
    import hpcrt
    from hpcrt.collectives import gla_backward, gla_forward
    hpcrt.init({"log_files": False})
    failures = []
    algorithms = ("pipeline", "allgather", "ring", "mpi", "auto")
    for seed, (algorithm, gate_width, (length, subchunk)) in enumerate(itertools.product(
            algorithms, (1, 5), ((45, 4), (20, 16)))):
        q, k, v, log_gates, grad_out = _problem(length, 5, 3, gate_width, seed)
        want_out = reference_forward(q, k, v, log_gates)[0]
        want_grads = reference_backward(q, k, v, log_gates, grad_out)
        lo, hi = _split(length, comm.size, seed)[comm.rank]
        mine = [x[lo:hi] for x in (q, k, v, log_gates, grad_out)]
        backend = rotating_backend(seed)
        mine = [to_backend(x, backend) for x in mine]
        out, incoming = gla_forward(*mine[:4], algorithm=algorithm, subchunk=subchunk, return_state=True)
        grads = gla_backward(*mine, algorithm=algorithm, subchunk=subchunk, incoming_state=incoming)
        rescanned = gla_backward(*mine, algorithm=algorithm, subchunk=subchunk)
        label = f"{algorithm} gates [L, {gate_width}] T={length} c={subchunk} {backend} rows {lo}:{hi}"
        if not np.allclose(to_host(out), want_out[lo:hi], rtol=1e-10, atol=1e-10):
            failures.append(f"{label}: outputs")
        for name, got, again, want in zip(("dq", "dk", "dv", "dlog_gates"), grads, rescanned, want_grads):
            if got.shape != want[lo:hi].shape or not np.allclose(to_host(got), want[lo:hi], rtol=1e-10, atol=1e-10):
                failures.append(f"{label}: {name}")
            if not np.allclose(to_host(again), to_host(got), rtol=1e-12, atol=1e-12):
                failures.append(f"{label}: {name} differs when the backward scans for the state again")
    assert_no_failures(comm, failures)


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_gla_float32_and_bad_inputs(comm):
    import hpcrt
    from hpcrt.collectives import CollectiveMismatchError, gla_forward
    hpcrt.init({"log_files": False})
    q, k, v, log_gates, _ = _problem(30, 4, 4, 4, seed=11, dtype=np.float32)
    lo, hi = _split(30, comm.size, 11)[comm.rank]
    out = gla_forward(q[lo:hi], k[lo:hi], v[lo:hi], log_gates[lo:hi])
    want = reference_forward(*(x.astype(np.float64) for x in (q, k, v, log_gates)))[0][lo:hi]
    assert out.dtype == np.float32 and np.allclose(out, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="log_gates"):
        gla_forward(q, k, v, log_gates[:, :2])
    with pytest.raises(CollectiveMismatchError, match="disagree on d_v"):
        gla_forward(q, k, v[:, :3] if comm.rank else v, log_gates)


@pytest.mark.mpi(ranks=[2, 3], timeout=60)
def test_gla_ranks_disagreeing_on_the_call_raise_everywhere(comm):
    """A differing algorithm or an incoming_state on some ranks only would run different scans
    (a hang); every rank raises instead, naming the field and the ranks."""
    import hpcrt
    from hpcrt.collectives import CollectiveMismatchError, gla_backward, gla_forward
    hpcrt.init({"log_files": False})
    q, k, v, log_gates, grad_out = _problem(4, 3, 2, 3, seed=comm.rank)
    with pytest.raises(CollectiveMismatchError, match="disagree on algorithm: rank 0 has 'pipeline', rank 1 has 'mpi'"):
        gla_forward(q, k, v, log_gates, algorithm="mpi" if comm.rank == 1 else "pipeline")
    with pytest.raises(CollectiveMismatchError, match="disagree on algorithm"):
        gla_backward(q, k, v, log_gates, grad_out, algorithm="ring" if comm.rank else "allgather")
    _, incoming = gla_forward(q, k, v, log_gates, return_state=True)
    mismatch = r"disagree on incoming_state: rank 0 has \(3, 2\), rank 1 has None"
    with pytest.raises(CollectiveMismatchError, match=mismatch):
        gla_backward(q, k, v, log_gates, grad_out, incoming_state=incoming if comm.rank == 0 else None)
    with pytest.raises(CollectiveMismatchError, match="disagree on input_error.*expected a numpy or CuPy array"):
        gla_forward(q.tolist() if comm.rank == 1 else q, k, v, log_gates)
    assert np.allclose(gla_backward(q, k, v, log_gates, grad_out, incoming_state=incoming)[0],
                       gla_backward(q, k, v, log_gates, grad_out)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.mpi(ranks=[1, 2], timeout=60)
def test_gla_bad_arguments_raise_clear_errors_before_communicating(comm):
    """A bad subchunk, 0-d inputs or a wrongly shaped incoming_state raise an error naming the
    argument and what it got, and leave no scan behind to confuse the next call."""
    import hpcrt
    from hpcrt.collectives import gla_backward, gla_forward
    hpcrt.init({"log_files": False})
    q, k, v, log_gates, grad_out = _problem(4, 3, 2, 3, seed=comm.rank)
    for subchunk in (0, -3, 2.5):
        with pytest.raises(ValueError, match=rf"subchunk must be a positive integer, got {subchunk}"):
            gla_forward(q, k, v, log_gates, subchunk=subchunk)
    scalar = np.ones(())
    with pytest.raises(TypeError, match=r"need q, k \[L, d_k\].*got q \(\)"):
        gla_forward(scalar, scalar, scalar, scalar)
    with pytest.raises(ValueError, match=r"incoming_state must have shape \[d_k, d_v\] = \(3, 2\), got \(7, 7\)"):
        gla_backward(q, k, v, log_gates, grad_out, incoming_state=np.zeros((7, 7)))
    with pytest.raises(TypeError, match="incoming_state must have q's dtype float64, got complex128"):
        gla_backward(q, k, v, log_gates, grad_out, incoming_state=np.zeros((3, 2), complex))
    with pytest.raises(ValueError, match="unknown algorithm 'bogus'"):
        gla_backward(q, k, v, log_gates, grad_out, algorithm="bogus")
    lo, hi = comm.rank * 4, comm.rank * 4 + 4
    whole = [np.concatenate([_problem(4, 3, 2, 3, seed=rank)[i] for rank in range(comm.size)]) for i in range(4)]
    assert np.allclose(gla_forward(q, k, v, log_gates), reference_forward(*whole)[0][lo:hi], rtol=1e-10, atol=1e-10)


def _batched_problem(batch, length, gate_width, seed, dtype):
    """Independent 2-D problems stacked over ``batch``: (q, k, v, log_gates, grad_out), each [*batch, L, ·]."""
    problems = [_problem(length, 3, 2, gate_width, seed * 100 + i, dtype) for i in range(int(np.prod(batch)))]
    return tuple(np.stack([p[j] for p in problems]).reshape(*batch, *problems[0][j].shape) for j in range(5))


@pytest.mark.mpi(ranks=[1, 2, 3, 4], timeout=300)
def test_batched_gla_equals_each_problem_alone(comm):
    """A batch of problems in one call gives each problem's 2-D result and the recurrence's, for
    every algorithm, batch shapes (3,) and (2, 2), per-token and per-channel gates, float32/64."""
    import hpcrt
    from hpcrt.collectives import gla_backward, gla_forward
    hpcrt.init({"log_files": False})
    failures = []
    for seed, (algorithm, batch, gate_width) in enumerate(itertools.product(
            ("pipeline", "allgather", "ring", "mpi"), ((3,), (2, 2)), (1, 3))):
        dtype = (np.float64, np.float32)[seed % 2]
        tight, loose = (1e-12, 1e-10) if dtype == np.float64 else (1e-5, 1e-4)
        whole = _batched_problem(batch, 21, gate_width, seed, dtype)
        lo, hi = _split(21, comm.size, seed)[comm.rank]
        backend = rotating_backend(seed)
        mine = [to_backend(np.ascontiguousarray(x[..., lo:hi, :]), backend) for x in whole]
        out, state = gla_forward(*mine[:4], algorithm=algorithm, subchunk=4, return_state=True)
        grads = gla_backward(*mine, algorithm=algorithm, subchunk=4, incoming_state=state)
        rescanned = gla_backward(*mine, algorithm=algorithm, subchunk=4)
        label = f"{algorithm} batch {batch} gates [L, {gate_width}] {np.dtype(dtype)} {backend} rows {lo}:{hi}"
        for index in np.ndindex(batch):
            alone = [x[index] for x in mine]
            want_out, want_state = gla_forward(*alone[:4], algorithm=algorithm, subchunk=4, return_state=True)
            want_grads = gla_backward(*alone, algorithm=algorithm, subchunk=4, incoming_state=want_state)
            reference = reference_forward(*(x[index].astype(np.float64) for x in whole[:4]))[0][lo:hi]
            references = reference_backward(*(x[index].astype(np.float64) for x in whole))
            named = zip(("out", "state", "dq", "dk", "dv", "dlog_gates"), (out, state, *grads),
                        (None, None, *rescanned), (want_out, want_state, *want_grads),
                        (reference, None, *(r[lo:hi] for r in references)))
            for name, got, again, want, ref in named:
                got = to_host(got[index])
                if got.dtype != dtype or not np.allclose(got, to_host(want), rtol=tight, atol=tight):
                    failures.append(f"{label} {index}: {name} differs from the problem alone")
                if ref is not None and not np.allclose(got, ref, rtol=loose, atol=loose):
                    failures.append(f"{label} {index}: {name} differs from the recurrence")
                if again is not None and not np.allclose(to_host(again[index]), got, rtol=tight, atol=tight):
                    failures.append(f"{label} {index}: {name} differs when the backward scans for the state again")
    assert_no_failures(comm, failures)


@pytest.mark.mpi(ranks=[2, 3], timeout=120)
def test_all_scan_combines_stacked_affine_pairs(comm):
    """The GLA's stacked state pairs, decay [..., d_k, 1] and state [..., d_k, d_v], scan as one
    operand under the affine op and its flip, by every algorithm, as a fold over the ranks' pairs."""
    import hpcrt
    from hpcrt.collectives import all_scan, flipped
    from hpcrt.collectives.allscan.ops import AFFINE
    hpcrt.init({"log_files": False})
    rng = np.random.default_rng(7)
    pairs = [(rng.uniform(0.5, 1.0, (2, 2, 3, 1)), rng.standard_normal((2, 2, 3, 4))) for _ in range(comm.size)]

    def fold(chosen):
        a, b = np.ones((2, 2, 3, 1)), np.zeros((2, 2, 3, 4))
        for a_next, b_next in chosen:
            a, b = a * a_next, a_next * b + b_next
        return a, b

    failures = []
    for algorithm, blocks in (("pipeline", 2), ("pipeline", None), ("allgather", None), ("ring", None), ("mpi", None)):
        forward = all_scan(pairs[comm.rank], AFFINE, comm=comm, algorithm=algorithm, blocks=blocks)
        backward = all_scan(pairs[comm.rank], flipped(AFFINE), comm=comm, reverse=True, algorithm=algorithm,
                            blocks=blocks)
        wants = (fold(pairs[:comm.rank]), fold(pairs[:comm.rank:-1]))
        for direction, got, want in zip(("forward", "reverse"), (forward, backward), wants):
            if not all(np.allclose(g, w, rtol=1e-12, atol=1e-12) for g, w in zip(got, want)):
                failures.append(f"{algorithm} blocks={blocks}: {direction} scan")
    assert_no_failures(comm, failures)


@pytest.mark.mpi(ranks=[2, 3], timeout=60)
def test_batched_gla_bad_batches_raise_everywhere(comm):
    """Ranks with different batch shapes raise CollectiveMismatchError on every rank (no scan
    hangs, the next call works); batch dims that differ between arguments are a clear error."""
    import hpcrt
    from hpcrt.collectives import CollectiveMismatchError, gla_backward, gla_forward
    hpcrt.init({"log_files": False})
    q, k, v, log_gates, grad_out = _batched_problem((3,), 4, 3, seed=comm.rank, dtype=np.float64)
    with pytest.raises(CollectiveMismatchError, match=r"disagree on batch: rank 0 has \(3,\), rank 1 has \(2,\)"):
        gla_forward(*(x[:2] if comm.rank == 1 else x for x in (q, k, v, log_gates)))
    with pytest.raises(CollectiveMismatchError, match=r"disagree on batch: rank 0 has \(3,\), rank 1 has \(\)"):
        gla_backward(*(x[0] if comm.rank == 1 else x for x in (q, k, v, log_gates, grad_out)))
    with pytest.raises(TypeError, match=r"after the same leading batch dimensions; got q \(3, 4, 3\).*v \(2, 4, 2\)"):
        gla_forward(q, k, v[:2], log_gates)
    wrong_state = r"incoming_state must have shape \[\.\.\., d_k, d_v\] = \(3, 3, 2\), got \(3, 2\)"
    with pytest.raises(ValueError, match=wrong_state):
        gla_backward(q, k, v, log_gates, grad_out, incoming_state=np.zeros((3, 2)))
    whole = [np.concatenate([_batched_problem((3,), 4, 3, rank, np.float64)[i] for rank in range(comm.size)], axis=-2)
             for i in range(4)]
    want = np.stack([reference_forward(*(x[b] for x in whole))[0] for b in range(3)])
    assert np.allclose(gla_forward(q, k, v, log_gates), want[:, 4 * comm.rank:4 * comm.rank + 4], rtol=1e-10,
                       atol=1e-10)
