"""What the collectives refuse or report on every rank instead of hanging or answering wrongly:
an intercommunicator (or anything not an intracommunicator) and a user scan op that raises on
one rank."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from conftest import assert_no_failures


def _intercomm(comm):
    """An intercommunicator between the even and the odd ranks of ``comm`` (the local group's
    size is then not the job's: a ring over it would quietly reduce over the wrong ranks)."""
    local = comm.Split(comm.rank % 2, comm.rank)
    return local, local.Create_intercomm(0, comm, 1 - comm.rank % 2, 99)


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_what_is_not_an_intracommunicator_is_refused(comm):
    import hpcrt
    from hpcrt.collectives import (HierarchicalPartition, all_scan, all_scan_choice, all_scan_start, allgather,
                                   allreduce, gla_forward, make_groups, reduce_scatter, ring_attention,
                                   ring_choice, token_ring_attention)
    hpcrt.init({"log_files": False})
    local, inter = _intercomm(comm)
    x, q = np.ones(6), np.ones((4, 2))
    calls = {f"{name} {algorithm}": (lambda c, call=call, algorithm=algorithm: call(c, algorithm))
             for algorithm in ("ring", "bidir_ring", "mpi", "auto")
             for name, call in (("allreduce", lambda c, a: allreduce(x, "max", comm=c, algorithm=a)),
                                ("reduce_scatter", lambda c, a: reduce_scatter(x, comm=c, algorithm=a)),
                                ("allgather", lambda c, a: allgather(x, comm=c, algorithm=a)))}
    calls.update({f"all_scan {a}": (lambda c, a=a: all_scan(x, "sum", comm=c, algorithm=a))
                  for a in ("pipeline", "allgather", "ring", "mpi", "auto")})
    calls.update({
        "all_scan_start": lambda c: all_scan_start(x, "max", comm=c),
        "all_scan_choice": lambda c: all_scan_choice(x, "sum", comm=c),
        "ring_choice": lambda c: ring_choice("allreduce", x, comm=c),
        "ring_attention": lambda c: ring_attention(q, q, q, comm=c),
        "token_ring_attention": lambda c: token_ring_attention(q, q, q, comm=c),
        "gla_forward": lambda c: gla_forward(q, q, q, np.zeros((4, 2)), comm=c),
        "HierarchicalPartition": lambda c: HierarchicalPartition(8, levels="flat", comm=c),
        "make_groups": lambda c: make_groups(dp=1, pp=1, tp=2, comm=c),
    })
    failures = []
    for label, call in calls.items():
        for bad, what in ((inter, "an intercommunicator"), (comm.py2f(), "of type int"), ("world", "of type str")):
            try:
                call(bad)
                failures.append(f"{label}: {what} taken")
            except TypeError as error:
                if not re.search(f"comm must be an intracommunicator.*{what}.* on rank {comm.rank}$", str(error)):
                    failures.append(f"{label}: {error}")
            except Exception as error:  # noqa: BLE001 - any other error is the failure being reported
                failures.append(f"{label} on {what}: {type(error).__name__}: {error}")
    # The communicator's own group works, and nothing is left in flight on the job's.
    if not np.array_equal(allreduce(x, comm=local), x * local.size):
        failures.append("the local group's allreduce is wrong")
    inter.Free()
    local.Free()
    assert_no_failures(comm, failures)
    hpcrt.finalize()


def _fragile_sum(comm):
    """A row-wise sum that raises on rank 1 of ``comm``, as a user op with a bad input might."""
    from hpcrt.collectives import ScanOp

    def combine(lower, upper):
        if comm.rank == 1:
            raise ValueError("the op cannot take this block")
        return lower + upper

    return ScanOp(combine, np.zeros_like, "fragile", rowwise=True)


@pytest.mark.mpi(ranks=[3], timeout=30)
def test_a_scan_op_raising_on_one_rank_raises_on_every_rank(comm):
    """Rank 1's op raises and every caller catches: every rank raises within seconds (rank 1 its
    own error, the others one naming rank 1), whatever the algorithm, and the next scan works."""
    import hpcrt
    from hpcrt.collectives import all_scan
    hpcrt.init({"log_files": False})
    op, x = _fragile_sum(comm), np.ones((8, 3))
    failures = []
    for algorithm, blocks, inclusive, reverse in (("pipeline", 4, False, False), ("pipeline", 4, True, True),
                                                  ("ring", None, True, False), ("allgather", None, True, False),
                                                  ("mpi", None, True, False), ("mpi", None, False, True)):
        label = f"{algorithm} blocks={blocks} inclusive={inclusive} reverse={reverse}"
        started = time.monotonic()
        try:
            all_scan(x, op, comm=comm, algorithm=algorithm, blocks=blocks, inclusive=inclusive, reverse=reverse)
            failures.append(f"{label}: no error")
        except Exception as error:  # noqa: BLE001 - the caller catches, as in the report
            want = (ValueError, "the op cannot take") if comm.rank == 1 else (
                RuntimeError, "op raised on another rank.*rank 1: ValueError: the op cannot take")
            if not isinstance(error, want[0]) or not re.search(want[1], str(error)):
                failures.append(f"{label}: {type(error).__name__}: {error}")
        if time.monotonic() - started > 5:
            failures.append(f"{label}: took {time.monotonic() - started:.1f} s")
        got = all_scan(x, "sum", comm=comm, algorithm=algorithm, inclusive=True)
        if not np.array_equal(got, x * (comm.rank + 1)):
            failures.append(f"{label}: the next scan is wrong")
    assert_no_failures(comm, failures)
    hpcrt.finalize()
