"""Host and device ranks in one collective: even ranks hold numpy arrays, odd ranks device arrays
(CuPy where a GPU is visible, else the fake GPU); every rank gets the numpy reference's result
on its own backend."""

import numpy as np
import pytest

import hpcrt
from hpcrt.collectives import all_scan, allgather, allreduce, reduce_scatter, ring_attention, token_ring_attention

from array_backends import BACKENDS, to_host
from conftest import assert_no_failures
from test_attention import full_sequence, softmax_attention

DEVICE = list(BACKENDS)[-1]


def rank_input(rank: int, n: int) -> np.ndarray:
    return np.random.default_rng([7, rank]).standard_normal(n)


def check(failures: list, label: str, got, mine, want) -> None:
    """Record what is wrong with ``got``: its backend must be the input's, its values ``want``'s."""
    if type(got) is not type(mine):
        failures.append(f"{label}: result on {type(got).__name__}, input on {type(mine).__name__}")
    elif not np.allclose(to_host(got), want, rtol=1e-12, atol=1e-12):
        failures.append(f"{label}: off by {np.abs(to_host(got) - want).max():.2e}")


@pytest.mark.mpi(ranks=[2, 3, 4], timeout=120)
def test_host_and_device_ranks_in_one_collective(comm):
    hpcrt.init({"log_files": False})
    p, r = comm.size, comm.rank
    backend = "numpy" if r % 2 == 0 else DEVICE
    convert = BACKENDS[backend]
    failures: list = []
    n = 1001  # not divisible by 2, 3 or 4
    inputs = [rank_input(i, n) for i in range(p)]
    mine = convert(inputs[r])
    total = np.sum(inputs, axis=0)
    for algorithm in ("ring", "bidir_ring", "mpi", "auto"):
        label = f"{algorithm} rank {r} on {backend}"
        check(failures, f"allreduce {label}", allreduce(mine, "sum", comm=comm, algorithm=algorithm), mine, total)
        check(failures, f"allgather {label}", allgather(mine, comm=comm, algorithm=algorithm), mine,
              np.concatenate(inputs))
        check(failures, f"reduce_scatter {label}", reduce_scatter(mine, "sum", comm=comm, algorithm=algorithm),
              mine, np.array_split(total, p)[r])
    for algorithm in ("pipeline", "allgather", "ring", "mpi", "auto"):
        for inclusive in (False, True):
            for reverse in (False, True):
                lo, hi = (r + (0 if inclusive else 1), p) if reverse else (0, r + (1 if inclusive else 0))
                got = all_scan(mine, "sum", comm=comm, algorithm=algorithm, inclusive=inclusive, reverse=reverse)
                check(failures, f"all_scan {algorithm} inclusive={inclusive} reverse={reverse} rank {r} on {backend}",
                      got, mine, np.sum(inputs[lo:hi], axis=0) if hi > lo else np.zeros(n))
    lengths = [5 + 3 * i for i in range(p)]
    start = sum(lengths[:r])
    q, k, v = full_sequence(3, (2,), sum(lengths), np.float64)
    want = softmax_attention(q, k, v, causal=True)[..., start:start + lengths[r], :]
    parts = [convert(a[..., start:start + lengths[r], :]) for a in (q, k, v)]
    for name, attention in (("ring", ring_attention), ("token_ring", token_ring_attention)):
        check(failures, f"{name}_attention rank {r} on {backend}", attention(*parts, comm=comm, causal=True),
              parts[0], want)
    hpcrt.finalize()
    assert_no_failures(comm, failures)
