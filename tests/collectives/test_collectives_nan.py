"""NaN under max and min: every algorithm of allreduce, reduce_scatter and All-Scan gives numpy's
answer (NaN wherever any rank contributing to an element has one) on every rank, with NaN on no
rank, on one rank only and on several, at 1–4 ranks."""

from __future__ import annotations

import numpy as np
import pytest

from array_backends import rotating_backend, to_backend, to_host
from conftest import assert_no_failures

RING_ALGORITHMS = ("ring", "bidir_ring", "mpi", "auto")
SCAN_ALGORITHMS = ("pipeline", "allgather", "ring", "mpi", "auto")
CASES = ((1, np.float64), (7, np.float32), (3001, np.float64))
"""(elements, dtype): 3001 is past where auto leaves MPI's own call for a ring on most machines."""


def _nan_ranks(p: int) -> dict:
    """Placement name → the ranks that hold NaN."""
    return {"none": (), "one": (p // 2,), "several": tuple(range(0, p, 2)) + (p - 1,)}


def _inputs(p: int, n: int, dtype, nan_ranks: tuple) -> list:
    """Every rank's operand: random values and ±inf (never NaN from arithmetic), NaN at positions
    that differ from rank to rank (first, last, and the rank's own one) and one shared position."""
    inputs = []
    for rank in range(p):
        x = np.random.default_rng([n, rank]).standard_normal(n).astype(dtype)
        x[rank % n] = np.inf if rank % 2 else -np.inf
        if rank in nan_ranks:
            x[[0, n - 1, (3 * rank + 1) % n, n // 2]] = np.nan
        inputs.append(x)
    return inputs


def _same(got, want) -> bool:
    return got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want, equal_nan=True)


def _scan_want(inputs: list, rank: int, inclusive: bool, reverse: bool) -> np.ndarray:
    """np.maximum over the ranks this rank's scan covers; -inf where it covers none."""
    covered = range(rank + (0 if inclusive else 1), len(inputs)) if reverse else range(rank + (1 if inclusive else 0))
    return np.maximum.reduce([np.full_like(inputs[0], -np.inf)] + [inputs[q] for q in covered])


def _ring_failures(comm, mine, inputs: list, where: str) -> list:
    """allreduce and reduce_scatter under max and min on every algorithm, against numpy."""
    from hpcrt.collectives import allreduce, reduce_scatter
    failures = []
    for op, fold in (("max", np.maximum.reduce), ("min", np.minimum.reduce)):
        want = fold(inputs, axis=0)
        for algorithm in RING_ALGORITHMS:
            if not _same(to_host(allreduce(mine, op, comm=comm, algorithm=algorithm)), want):
                failures.append(f"allreduce {op} {algorithm} {where}")
            got = to_host(reduce_scatter(mine, op, comm=comm, algorithm=algorithm))
            if not _same(got, np.array_split(want, comm.size)[comm.rank]):
                failures.append(f"reduce_scatter {op} {algorithm} {where}")
    return failures


def _scan_failures(comm, mine, inputs: list, where: str) -> list:
    """All-Scan under max on every algorithm, forward exclusive and reverse inclusive, against numpy."""
    from hpcrt.collectives import all_scan
    failures = []
    for algorithm in SCAN_ALGORITHMS:
        for inclusive, reverse in ((False, False), (True, True)):
            got = all_scan(mine, "max", comm=comm, algorithm=algorithm, inclusive=inclusive, reverse=reverse)
            if not _same(to_host(got), _scan_want(inputs, comm.rank, inclusive, reverse)):
                failures.append(f"all_scan max {algorithm} inclusive={inclusive} reverse={reverse} {where}")
    return failures


@pytest.mark.mpi(ranks=[1, 2, 3, 4], timeout=90)
def test_max_and_min_propagate_nan_on_every_algorithm(comm):
    import hpcrt
    hpcrt.init({"log_files": False})
    failures, case = [], 0
    for placement, nan_ranks in _nan_ranks(comm.size).items():
        for n, dtype in CASES:
            inputs = _inputs(comm.size, n, dtype, nan_ranks)
            backend = rotating_backend(case)  # every backend meets every placement across cases
            case += 1
            mine = to_backend(inputs[comm.rank], backend)
            where = f"{placement} n={n} {np.dtype(dtype).name} {backend}"
            failures += _ring_failures(comm, mine, inputs, where) + _scan_failures(comm, mine, inputs, where)
    assert_no_failures(comm, failures)
