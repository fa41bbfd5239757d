"""The time one more All-Scan pipeline block adds beyond its bytes, measured with hpcrt's own
pipeline on every rank of a communicator: the cost model's term that the links alone do not show
(hpcrt's work per message in Python, tens of µs, against a few µs of message α)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcrt._src.costmodel import measure_schedule_costs
from hpcrt._src.topology import LinkCost, Topology

from .allscan import all_scan
from .allscan_cost import PIPELINE_BLOCK

ROWS = 64
"""Rows of the measured state (float32): small enough that the bytes cost nothing."""
MANY_BLOCKS = 33
BATCHES = 5
CALLS = 10


def pipeline_batch(comm: Any, state: np.ndarray, blocks: int, calls: int = CALLS) -> float:
    """Seconds per call of ``calls`` back-to-back pipeline scans with ``blocks`` blocks (the
    slowest rank's). Collective."""
    comm.Barrier()
    start = time.perf_counter()
    for _ in range(calls):
        all_scan(state, "sum", comm=comm, algorithm="pipeline", blocks=blocks, validate=False)
    return comm.allreduce((time.perf_counter() - start) / calls, op=MPI.MAX)


def measure_pipeline_block(comm: Any) -> LinkCost:
    """Seconds per extra block, as a :class:`LinkCost` with β 0: the median of ``BATCHES`` batches
    with ``MANY_BLOCKS`` blocks less the median with one, over the extra blocks. Collective; 0 at one
    rank. Batches alternate, so load from other jobs meets both alike."""
    if comm.size < 2:
        return LinkCost(0.0, 0.0)
    state = np.zeros(ROWS, dtype=np.float32)
    for blocks in (1, MANY_BLOCKS):  # warm the path and the pools up
        pipeline_batch(comm, state, blocks)
    one, many = [], []
    for _ in range(BATCHES):
        one.append(pipeline_batch(comm, state, 1))
        many.append(pipeline_batch(comm, state, MANY_BLOCKS))
    return LinkCost(max(0.0, (statistics.median(many) - statistics.median(one)) / (MANY_BLOCKS - 1)), 0.0)


def measure_scan_costs(comm: Any, topology: Topology) -> dict[str, LinkCost]:
    """Everything All-Scan's model measures in a run: the chain and shift schedules and the
    pipeline block, keyed as :func:`~hpcrt.collectives.scan_links` reads them from the topology's
    ``link_costs``. Collective; empty at one rank."""
    costs = measure_schedule_costs(comm, topology)
    if costs:
        costs[PIPELINE_BLOCK] = measure_pipeline_block(comm)
    return costs
