"""The training job's GLA language model: its loss against a token-by-token numpy reference, every
parameter tensor's hand-written gradient against central differences of that reference, and the
sequence split over ranks (every All-Scan algorithm) against the single-process run."""

from __future__ import annotations

import numpy as np
import pytest

from array_backends import BACKENDS, to_backend, to_host
from conftest import assert_no_failures

TINY = dict(vocab=7, d_model=6, heads=2, d_k=3, d_v=2, layers=2, d_ff=8)


def _rms(x, gain):
    return x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + 1e-6) * gain


def reference_loss(shape, p, tokens, targets, normalizer):
    """The model's loss from its definition: one sequence, one head and one token at a time."""
    total = 0.0
    hk, hv = shape.d_k, shape.d_v
    for seq, tgt in zip(tokens, targets):
        x = p["embed"][seq]
        for i in range(shape.layers):
            w = {name.split(".")[-1]: value for name, value in p.items() if name.startswith(f"blocks.{i}.")}
            h = _rms(x, w["norm1"])
            q, k, v = h @ w["wq"] / np.sqrt(hk), h @ w["wk"], h @ w["wv"]
            decay = np.exp(-np.log1p(np.exp(-(h @ w["wg"] + w["bg"]))) / 16)
            mixed = np.zeros((len(seq), shape.heads * hv))
            for head in range(shape.heads):
                kc, vc = slice(head * hk, (head + 1) * hk), slice(head * hv, (head + 1) * hv)
                state = np.zeros((hk, hv))
                for t in range(len(seq)):
                    state = decay[t, kc][:, None] * state + np.outer(k[t, kc], v[t, vc])
                    mixed[t, vc] = q[t, kc] @ state
            x = x + mixed @ w["wo"]
            a = _rms(x, w["norm2"]) @ w["w1"]
            x = x + a / (1 + np.exp(-a)) @ w["w2"]
        logits = _rms(x, p["norm_f"]) @ p["head"]
        top = logits.max(axis=1)
        lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        total += (lse - logits[np.arange(len(seq)), tgt]).sum()
    return total / normalizer


def _problem(shape, batch, length, seed, dtype="float64", spread=0.3):
    """Parameters moved off their initial values (gains ≠ 1, generic gate biases) and random
    tokens with their next-token targets."""
    from hpcrt.jobs.train.model import init_params
    rng = np.random.default_rng(seed)
    params = init_params(shape, seed, "float64", np)
    params = (params + rng.normal(0, spread, params.shape)).astype(dtype)
    stream = rng.integers(0, shape.vocab, (batch, length + 1))
    return params, stream[:, :-1], stream[:, 1:]


def test_every_parameter_gradient_matches_finite_differences():
    from mpi4py import MPI

    import hpcrt
    from hpcrt.jobs.train.model import ModelShape, ParamLayout, loss, loss_and_grad
    hpcrt.init({"log_files": False})
    shape = ModelShape(**TINY)
    params, tokens, targets = _problem(shape, batch=2, length=5, seed=3)
    layout = ParamLayout.of(shape)
    got_loss, grad = loss_and_grad(shape, params, tokens, targets, sp_comm=MPI.COMM_SELF, normalizer=10)
    want_loss = reference_loss(shape, layout.views(params), tokens, targets, 10)
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    assert loss(shape, params, tokens, targets, sp_comm=MPI.COMM_SELF, normalizer=10) == pytest.approx(want_loss,
                                                                                                       rel=1e-12)
    rng = np.random.default_rng(0)
    eps = 1e-5
    probe = params.copy()
    views, grads = layout.views(probe), layout.views(grad)
    for name in layout.names:
        flat_view = views[name].reshape(-1)
        coords = rng.choice(flat_view.size, min(4, flat_view.size), replace=False)
        numeric = []
        for c in coords:
            saved = flat_view[c]
            flat_view[c] = saved + eps
            up = reference_loss(shape, views, tokens, targets, 10)
            flat_view[c] = saved - eps
            down = reference_loss(shape, views, tokens, targets, 10)
            flat_view[c] = saved
            numeric.append((up - down) / (2 * eps))
        analytic = grads[name].reshape(-1)[coords]
        error = np.linalg.norm(analytic - numeric) / np.linalg.norm(numeric)
        assert error < 1e-6, f"{name}: analytic {analytic} vs numeric {numeric} (relative error {error:.2e})"


@pytest.mark.mpi(ranks=[2, 3], timeout=120)
def test_sequence_split_over_ranks_matches_single_process(comm):
    from mpi4py import MPI

    import hpcrt
    from hpcrt.jobs.train.model import ModelShape, loss_and_grad
    runtime = hpcrt.init({"log_files": False})
    shape = ModelShape(**TINY)
    batch, length = 2, 7
    params, tokens, targets = _problem(shape, batch, length, seed=5)
    lo, hi = {2: (0, 5, 7), 3: (0, 1, 4, 7)}[comm.size][comm.rank:comm.rank + 2]
    failures = []
    for scan in ("pipeline", "allgather", "ring", "mpi"):
        want_loss, want_grad = loss_and_grad(shape, params, tokens, targets, sp_comm=MPI.COMM_SELF, scan=scan,
                                             normalizer=batch * length)
        mine, grad = loss_and_grad(shape, params, tokens[:, lo:hi], targets[:, lo:hi], sp_comm=runtime.comm,
                                   scan=scan, normalizer=batch * length)
        total = np.empty_like(grad)
        comm.Allreduce(grad, total)
        if not np.isclose(comm.allreduce(mine), want_loss, rtol=1e-10, atol=0):
            failures.append(f"{scan}: loss {comm.allreduce(mine)} vs {want_loss}")
        if not np.allclose(total, want_grad, rtol=1e-10, atol=1e-12 * np.abs(want_grad).max()):
            failures.append(f"{scan}: gradient differs by {np.abs(total - want_grad).max():.2e}")
    assert_no_failures(comm, failures)


def test_float32_and_seeded_initialization():
    from mpi4py import MPI

    import hpcrt
    from hpcrt.jobs.train.model import ModelShape, ParamLayout, init_params, loss_and_grad
    hpcrt.init({"log_files": False})
    shape = ModelShape(**TINY)
    layout = ParamLayout.of(shape)
    first = init_params(shape, 1, "float32", np)
    assert first.dtype == np.float32 and first.shape == (layout.numel,)
    assert np.array_equal(first, init_params(shape, 1, "float32", np))
    assert not np.array_equal(first, init_params(shape, 2, "float32", np))
    assert layout.names[:3] == ("embed", "blocks.0.norm1", "blocks.0.wq") and layout.names[-2:] == ("norm_f", "head")
    layout.views(first)["head"][0, 0] = 42.0
    assert first[-shape.vocab * shape.d_model] == 42.0, "views must share the flat buffer's memory"
    params, tokens, targets = _problem(shape, batch=2, length=5, seed=4, dtype="float32")
    got_loss, grad = loss_and_grad(shape, params, tokens, targets, sp_comm=MPI.COMM_SELF, normalizer=10)
    want_loss, want_grad = loss_and_grad(shape, params.astype(np.float64), tokens, targets, sp_comm=MPI.COMM_SELF,
                                         normalizer=10)
    assert grad.dtype == np.float32 and grad.shape == params.shape
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    assert np.allclose(grad, want_grad, rtol=1e-3, atol=1e-4 * np.abs(want_grad).max())


@pytest.mark.parametrize("backend", [name for name in BACKENDS if name != "numpy"])
def test_device_backends_give_the_host_result(backend):
    """The model runs on device arrays (the fake GPU refuses implicit host conversion, as CuPy
    does) from host token arrays, and returns a device gradient equal to the numpy one."""
    from mpi4py import MPI

    import hpcrt
    from hpcrt.jobs.train.model import ModelShape, loss_and_grad
    hpcrt.init({"log_files": False})
    shape = ModelShape(**TINY)
    params, tokens, targets = _problem(shape, batch=2, length=5, seed=6)
    want_loss, want_grad = loss_and_grad(shape, params, tokens, targets, sp_comm=MPI.COMM_SELF, normalizer=10)
    got_loss, grad = loss_and_grad(shape, to_backend(params, backend), tokens, targets, sp_comm=MPI.COMM_SELF,
                                   normalizer=10)
    assert not isinstance(grad, np.ndarray) and got_loss == pytest.approx(want_loss, rel=1e-12)
    assert np.allclose(to_host(grad), want_grad, rtol=1e-12, atol=1e-14)
