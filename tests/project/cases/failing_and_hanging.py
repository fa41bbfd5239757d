"""MPI tests that must fail: the harness's own tests run them and check how they are reported.

Not collected by the suite (the name does not start with ``test_``); test_harness.py passes
this file to a pytest of its own.
"""

import time

import pytest


@pytest.mark.mpi(ranks=[3], timeout=30)
def test_rank_one_fails(comm):
    assert comm.rank != 1, f"rank {comm.rank} computed the wrong answer"
    comm.Barrier()


@pytest.mark.mpi(ranks=[2], timeout=5)
def test_rank_one_hangs(comm):
    if comm.rank == 1:
        time.sleep(3600)
    comm.Barrier()


@pytest.mark.mpi(ranks=[2], timeout=30)
def test_rank_one_dies(comm):
    import os
    if comm.rank == 1:
        os._exit(9)
    comm.Barrier()


@pytest.mark.mpi(ranks=[2], timeout=30)
def test_rank_one_exits_nonzero_after_passing(comm):
    import atexit
    import os
    if comm.rank == 1:
        atexit.register(os._exit, 7)  # after pytest has written this rank's passing report
    comm.Barrier()


@pytest.mark.mpi(ranks=[2], timeout=5)
def test_rank_one_hangs_at_exit_after_passing(comm):
    import atexit
    if comm.rank == 1:
        atexit.register(time.sleep, 3600)
    comm.Barrier()
