"""The one timed loop of every benchmark and calibration: a barrier, ``perf_counter`` round the
calls, and the ranks' times gathered, so that all of them measure alike."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Optional

import numpy as np
from mpi4py import MPI


def rank_times(fn: Callable[[], Any], iters: int, comm: Optional[Any] = None, *,
               finish: Optional[Callable[[Any], None]] = None, each: bool = False) -> list[float]:
    """Seconds per call of ``iters`` calls of ``fn`` on every rank of ``comm`` (one value without a
    communicator): after a barrier, back to back and timed together, or with ``each`` every call
    alone after a barrier of its own. ``finish(result)`` runs inside the timing on the last result
    (with ``each``, on every one), e.g. waiting for device work. Collective over ``comm``."""
    if each:
        total = sum(call_samples(fn, iters, comm, finish=finish, slowest=False))
    else:
        if comm is not None:
            comm.Barrier()
        start = time.perf_counter()
        result = None
        for _ in range(iters):
            result = fn()
        if finish is not None:
            finish(result)
        total = time.perf_counter() - start
    return comm.allgather(total / iters) if comm is not None else [total / iters]


def timed(fn: Callable[[], Any], iters: int, comm: Optional[Any] = None, *,
          finish: Optional[Callable[[Any], None]] = None) -> float:
    """Seconds per call of ``iters`` back-to-back calls of ``fn``, the slowest rank's (see :func:`rank_times`)."""
    return max(rank_times(fn, iters, comm, finish=finish))


def call_samples(fn: Callable[[], Any], iters: int, comm: Optional[Any] = None, *,
                 setup: Optional[Callable[[], Any]] = None, finish: Optional[Callable[[Any], None]] = None,
                 slowest: bool = True) -> list[float]:
    """Seconds of each of ``iters`` calls of ``fn`` timed alone, each after ``setup()`` (untimed)
    and a barrier: the slowest rank's per call (this rank's without ``slowest``). Collective over ``comm``."""
    samples = []
    for _ in range(iters):
        if setup is not None:
            setup()
        if comm is not None:
            comm.Barrier()
        start = time.perf_counter()
        result = fn()
        if finish is not None:
            finish(result)
        samples.append(time.perf_counter() - start)
    if comm is None or not slowest:
        return samples
    most = np.empty(len(samples))
    comm.Allreduce(np.asarray(samples, dtype=float), most, op=MPI.MAX)
    return most.tolist()


def median_call(fn: Callable[[], Any], iters: int, comm: Optional[Any] = None, *,
                setup: Optional[Callable[[], Any]] = None) -> float:
    """The median of :func:`call_samples`: a call's latency, the slowest rank's."""
    return statistics.median(call_samples(fn, iters, comm, setup=setup))


__all__ = ["rank_times", "timed", "call_samples", "median_call"]
