"""Waiting on MPI without spinning: for background threads and idle ranks, whose busy-polling
would take a core from the ranks and threads doing the work (MPI implementations poll in their
blocking calls; on a node with more busy threads than cores, that is a core lost)."""

from __future__ import annotations

import time
from typing import Any, Sequence

POLL_S = 1e-4
"""Sleep between two tests of the requests: the latency a wait adds at most."""


def idle_wait(requests: Sequence[Any]) -> None:
    """Return once every request (mpi4py ``Request``) is complete, sleeping between tests."""
    pending = list(requests)
    while pending and not pending[0].Testall(pending):
        time.sleep(POLL_S)


def idle_until_all_arrive(comm: Any) -> None:
    """A barrier that sleeps instead of spinning; call it before a blocking collective so that
    the collective finds every rank there and completes without polling for long."""
    idle_wait([comm.Ibarrier()])
