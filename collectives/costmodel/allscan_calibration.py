"""What hpcrt's own work adds to All-Scan's messages, measured with its own scans on every rank of
a communicator: the time one more pipeline block adds beyond its bytes, and the fixed cost of a
call down each code path (hpcrt's work in Python, tens of µs, against a few µs of message α)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcrt.costmodel.links import measure_schedule_costs
from hpcrt.topology.table import LinkCost, Topology

from hpcrt.collectives.allscan.entry import all_scan
from hpcrt.collectives.comm.tracing import payload_bytes
from hpcrt.collectives.costmodel.allscan import PIPELINE_BLOCK, ScanLinks, call_cost_key, predict_allscan, scan_links

ROWS = 64
"""Rows of the measured state (float32): small enough that the bytes cost nothing."""
MANY_BLOCKS = 33
BATCHES = 5
CALLS = 10
CALL_PROBES = {"pipeline": ("ring", "sum"), "allgather": ("allgather", "sum"), "mpi": ("mpi", "sum"),
               "mpi_user": ("mpi", "affine")}
"""Per code path, the (algorithm, op) whose calls measure its fixed cost (the pipeline's at one block).
The user-op path is probed with affine, the others with sum: for an affine state the pipeline's and
the all-gather's own combine work (three ufuncs where sum has one) is then left out, a small bias
towards them against MPI's call-back path, which pays the same combine once per round."""


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


def call_latency(comm: Any, state: Any, algorithm: str, op: str = "sum", calls: int = CALLS) -> float:
    """Seconds of one scan of ``state`` under ``op`` called alone after a barrier (the latency ``auto``
    is judged by): the median of ``calls`` calls, the slowest rank's. Collective."""
    times = []
    for _ in range(calls):
        comm.Barrier()
        start = time.perf_counter()
        all_scan(state, op, comm=comm, algorithm=algorithm, validate=False)
        times.append(time.perf_counter() - start)
    return comm.allreduce(statistics.median(times), op=MPI.MAX)


def _probe_state(op: str) -> Any:
    """A small state for ``op``: ``ROWS`` float32 values, or an affine pair of them."""
    return (np.ones(ROWS, dtype=np.float32), np.zeros(ROWS, dtype=np.float32)) if op == "affine" \
        else np.zeros(ROWS, dtype=np.float32)


def measure_call_costs(comm: Any, links: ScanLinks) -> dict[str, LinkCost]:
    """Per code path, what a call on a small state takes beyond the model's messages at ``links``
    (whose own call costs are left out): :class:`LinkCost` with β 0 keyed by :func:`call_cost_key`,
    never below 0. The paths take turns over ``BATCHES`` batches and each keeps its quickest batch:
    a slow spell of a shared machine only adds, and one that met a single path's batches would
    otherwise turn the choice between paths. Collective; empty at one rank."""
    if comm.size < 2:
        return {}
    messages_only = dataclasses.replace(links, calls=())
    states = {path: _probe_state(op) for path, (_, op) in CALL_PROBES.items()}
    for path, (algorithm, op) in CALL_PROBES.items():  # warm each path up
        call_latency(comm, states[path], algorithm, op, calls=2)
    times: dict = {path: [] for path in CALL_PROBES}
    for _ in range(BATCHES):
        for path, (algorithm, op) in CALL_PROBES.items():
            times[path].append(call_latency(comm, states[path], algorithm, op))
    return {call_cost_key(path): LinkCost(max(0.0, min(times[path]) - predict_allscan(
        algorithm, payload_bytes(states[path]), comm.size, messages_only)), 0.0)
        for path, (algorithm, _) in CALL_PROBES.items()}


def measure_scan_costs(comm: Any, topology: Topology) -> dict[str, LinkCost]:
    """Everything All-Scan's model measures in a run: the chain and shift schedules, the pipeline
    block and the call costs, keyed as :func:`~hpcrt.collectives.scan_links` reads them from the
    topology's ``link_costs``. Collective; empty at one rank."""
    costs = measure_schedule_costs(comm, topology)
    if costs:
        costs[PIPELINE_BLOCK] = measure_pipeline_block(comm)
        measured = dataclasses.replace(topology, link_costs={**topology.link_costs, **costs})
        costs.update(measure_call_costs(comm, scan_links(measured)))
    return costs
