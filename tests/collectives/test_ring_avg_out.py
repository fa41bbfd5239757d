"""op="avg" and out= of the ring collectives on every algorithm and backend, against numpy, and
the one entry sequence's agreement: a call that differs across ranks, or one rank's bad out=,
raises on every rank, naming the rank and the cause."""

import numpy as np
import pytest

import hpcrt
from hpcrt.collectives import CollectiveMismatchError, all_scan, allgather, allreduce, reduce_scatter

from array_backends import BACKENDS, to_host
from conftest import assert_no_failures

ALGORITHMS = ("ring", "bidir_ring", "mpi", "auto")
DTYPES = (np.float32, np.float64, np.complex128)


def rank_input(rank: int, n: int, dtype) -> np.ndarray:
    values = np.random.default_rng([11, rank]).standard_normal(n)
    return (values + 1j * values[::-1] if np.dtype(dtype).kind == "c" else values).astype(dtype)


def check(failures: list, label: str, got, want, dtype) -> None:
    rtol = 1e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12
    host = to_host(got)
    if host.dtype != np.dtype(dtype):
        failures.append(f"{label}: dtype {host.dtype}, want {np.dtype(dtype)}")
    elif host.shape != want.shape or not np.allclose(host, want, rtol=rtol, atol=rtol):
        failures.append(f"{label}: off the numpy reference")


@pytest.mark.mpi(ranks=[2, 3], timeout=150)
def test_avg_and_out_match_numpy(comm):
    hpcrt.init({"log_files": False})
    p, r, n = comm.size, comm.rank, 7  # 7: blocks of unequal size at 2 and 3 ranks
    failures: list = []
    for backend, convert in BACKENDS.items():
        for dtype in DTYPES:
            inputs = [rank_input(i, n, dtype) for i in range(p)]
            mean = (np.sum(inputs, axis=0) / p).astype(dtype)
            block = np.array_split(np.arange(n), p)[r]
            for algorithm in ALGORITHMS:
                label = f"{backend} {np.dtype(dtype)} {algorithm}"
                x = convert(inputs[r].reshape(1, n))
                check(failures, f"allreduce avg {label}", allreduce(x, "avg", algorithm=algorithm), mean[None], dtype)
                check(failures, f"reduce_scatter avg {label}", reduce_scatter(x, "avg", algorithm=algorithm),
                      mean[block], dtype)
                out = convert(np.zeros((1, n), dtype))
                got = allreduce(x, "sum", algorithm=algorithm, out=out)
                if got is not out:
                    failures.append(f"allreduce out= {label}: did not return out")
                check(failures, f"allreduce out= {label}", out, np.sum(inputs, axis=0).astype(dtype)[None], dtype)
                in_place = convert(inputs[r].reshape(1, n).copy())
                if allreduce(in_place, "avg", algorithm=algorithm, out=in_place) is not in_place:
                    failures.append(f"allreduce out=x {label}: did not return x")
                check(failures, f"allreduce out=x {label}", in_place, mean[None], dtype)
                gathered = convert(np.zeros((p, n), dtype))
                if allgather(x, algorithm=algorithm, out=gathered) is not gathered:
                    failures.append(f"allgather out= {label}: did not return out")
                check(failures, f"allgather out= {label}", gathered, np.stack(inputs), dtype)
                piece = convert(np.zeros(len(block), dtype))
                if reduce_scatter(x, "avg", algorithm=algorithm, out=piece) is not piece:
                    failures.append(f"reduce_scatter out= {label}: did not return out")
                check(failures, f"reduce_scatter out= {label}", piece, mean[block], dtype)
    hpcrt.finalize()
    assert_no_failures(comm, failures)


def raised(call) -> BaseException | None:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the test looks at what was raised
        return error
    return None


@pytest.mark.mpi(ranks=[2, 3], timeout=120)
def test_avg_of_integers_and_bad_out_raise_on_every_rank(comm):
    hpcrt.init({"log_files": False})
    r, failures = comm.rank, []
    x = np.arange(6.0)
    for algorithm in ALGORITHMS:
        for collective in (allreduce, reduce_scatter):
            error = raised(lambda: collective(np.arange(6), "avg", algorithm=algorithm))
            if not (isinstance(error, TypeError) and "op 'avg' needs a floating or complex dtype" in str(error)):
                failures.append(f"{collective.__name__} avg of int64 {algorithm}: {error!r}")
        read_only = np.zeros(6)
        read_only.flags.writeable = False
        bad_outs = {"shape": (np.zeros(5), ValueError, "shape"), "dtype": (np.zeros(6, np.float32), TypeError, "dtype"),
                    "backend": (list(BACKENDS.values())[-1](np.zeros(6)), TypeError, "array like x"),
                    "strided": (np.zeros(12)[::2], ValueError, "C-contiguous"),
                    "read-only": (read_only, ValueError, "read-only")}
        for what, (out, kind, words) in bad_outs.items():
            # every rank passes it: each raises its own error
            error = raised(lambda: allreduce(x, algorithm=algorithm, out=out))
            if not (isinstance(error, kind) and words in str(error)):
                failures.append(f"allreduce out {what} {algorithm}, every rank: {error!r}")
            # rank 1 alone passes it: every rank raises, naming rank 1 and the cause
            error = raised(lambda: allreduce(x, algorithm=algorithm, out=out if r == 1 else None))
            if not (isinstance(error, CollectiveMismatchError) and "rank 1 has" in str(error) and words in str(error)):
                failures.append(f"allreduce out {what} {algorithm}, rank 1 only: {error!r}")
        good = allreduce(x, algorithm=algorithm)  # nothing left in flight after the refusals
        if not np.array_equal(good, x * comm.size):
            failures.append(f"allreduce {algorithm} after refusals: wrong result")
    hpcrt.finalize()
    assert_no_failures(comm, failures)


@pytest.mark.mpi(ranks=[2, 3], timeout=120)
def test_a_call_that_differs_across_ranks_raises_on_every_rank(comm):
    """The signature check of the small-call path: repeated good calls (the plan cached), then one
    whose shape, op or algorithm differs on the last rank, on every path to MPI."""
    hpcrt.init({"log_files": False})
    last, failures = comm.size - 1, []
    mine = comm.rank == last
    calls = {
        "allreduce shape": (lambda: allreduce(np.ones(2 if mine else 1), algorithm="mpi"), "shape"),
        "allreduce op": (lambda: allreduce(np.ones(1), "max" if mine else "sum"), "op"),
        "allreduce algorithm": (lambda: allreduce(np.ones(1), algorithm="ring" if mine else "mpi"), "algorithm"),
        "all_scan shape": (lambda: all_scan(np.ones(2 if mine else 1), "sum", algorithm="mpi"), "shape"),
        "all_scan inclusive": (lambda: all_scan(np.ones(1), "sum", inclusive=mine), "inclusive"),
    }
    for label, (call, field) in calls.items():
        for _ in range(3):
            allreduce(np.ones(1), algorithm="mpi")
            all_scan(np.ones(1), "sum", algorithm="mpi")
        error = raised(call)
        if not (isinstance(error, CollectiveMismatchError) and f"ranks disagree on {field}" in str(error)
                and f"rank {last} has" in str(error) and f"seen on rank {comm.rank}" in str(error)):
            failures.append(f"{label}: {error!r}")
    if not np.array_equal(all_scan(np.ones(1), "sum"), np.full(1, float(comm.rank))):
        failures.append("all_scan after the mismatches: wrong result")
    hpcrt.finalize()
    assert_no_failures(comm, failures)
