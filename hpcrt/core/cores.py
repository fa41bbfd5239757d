"""Each rank's share of its host's cores for the thread pools inside it (BLAS, numba): with every
rank running as many threads as the host has cores, the threads spin against each other — the
training job's backward ran 15x slower that way at 4 ranks on 2 cores."""

from __future__ import annotations

import os
from typing import Any


def share_cores(runtime: Any) -> int:
    """Limit this rank's BLAS and numba threads to its host's cores divided by the ranks on that
    host (at least 1); the number of threads. A limit the user set (``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``, ``NUMBA_NUM_THREADS``) is left alone."""
    import numba
    from threadpoolctl import threadpool_limits

    host = runtime.topology.ranks[runtime.rank].host
    local_ranks = sum(r.host == host for r in runtime.topology.ranks)
    threads = max(1, len(os.sched_getaffinity(0)) // local_ranks)
    if not any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")):
        threadpool_limits(limits=threads, user_api="blas")
    if not os.environ.get("NUMBA_NUM_THREADS"):
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, threads)))
    return threads
