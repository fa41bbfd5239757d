"""Measure, in the running job, what the collectives' cost model weighs, so that ``auto`` weighs
the costs of this machine and this code, and install it as the runtime's cost table: the link
classes' α-β (ping-pong), All-Scan's chain hop and shift round, its pipeline block, a round of
MPI's own scan and per-call costs, and a step of each ring algorithm and MPI's allreduce. Every timing goes through
:mod:`hpcrt.costmodel.timing`; batches of the things compared take turns, so load from other jobs
meets all of them alike."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Callable

import numpy as np
from mpi4py import MPI

from hpcrt.core.runtime import get_runtime
from hpcrt.costmodel.links import fit_link_cost, measure_link_costs, measure_schedule_costs
from hpcrt.costmodel.model import CHAIN, SHIFT
from hpcrt.costmodel.table import CostTable
from hpcrt.costmodel.timing import median_call, timed
from hpcrt.topology.table import LinkCost, Topology

from hpcrt.collectives.allscan.entry import all_scan
from hpcrt.collectives.comm.tracing import payload_bytes
from hpcrt.collectives.costmodel.allscan import (MPI_ROUND_SPLIT, MPI_ROUNDS, ScanLinks, call_name, predict_allscan,
                                                 scan_links)
from hpcrt.collectives.costmodel.rings import MPI_ALLREDUCE, STEPPED, phase_steps, step_bytes
from hpcrt.collectives.rings.entry import allreduce

ROWS = 64
"""Rows of the All-Scan probes' state (float32): small enough that the bytes cost nothing."""
LARGE_SCAN = 4 << 20
"""Bytes of the larger state MPI's own scan is timed at (the smaller: ``ROWS`` float32): past the caches,
as the rings' large buffer, since the model prices large states by it."""
MANY_BLOCKS = 33
BATCHES = 5
CALLS = 10
CALL_PROBES = {"pipeline": ("ring", "sum"), "allgather": ("allgather", "sum"), "mpi": ("mpi", "sum"),
               "mpi_user": ("mpi", "affine")}
"""Per code path, the (algorithm, op) whose calls measure its fixed cost (the pipeline's at one block).
The user-op path is probed with affine, the others with sum: for an affine state the pipeline's and
the all-gather's own combine work (three ufuncs where sum has one) is then left out, a small bias
towards them against MPI's call-back path, which pays the same combine once per round."""
SMALL_PIECE = 8
LARGE_PIECE = 1 << 20
LARGE_BUFFER = 16 << 20
"""The rings' measured sizes: buffers of p pieces of 8 B and of 1 MiB, the large one cut to 16 MiB
(at most 48 MiB a rank, and about as long a call, at any rank count), the same buffers for every
algorithm. Past the caches on purpose: at a few hundred KiB a step's time hangs on where malloc
happened to put the step's result beside its input (2× apart on the 2-core VM between two
placements of the same buffer)."""
RING_BATCHES = 7
RING_CALLS = 5


def calibrate() -> CostTable:
    """Measure the model's costs on the runtime's communicator and make them the runtime's cost
    table (``runtime.costs``), where ``auto`` reads them; returns the table, the same on every rank.

    The link classes first (not under link emulation, where the topology file's costs are what
    messages pay), then All-Scan's and the rings' costs, measured with their own code over those
    links. Collective; a second or two on 2–16 ranks of one machine (the rings' large buffers take
    most of it); nothing to measure at one rank.
    """
    runtime = get_runtime()
    comm, topology = runtime.comm, runtime.topology
    if not topology.emulate:
        runtime.costs = runtime.costs.with_measured(links=measure_link_costs(comm, topology))
    runtime.costs = measure_scan_costs(comm, topology, runtime.costs)  # over the link classes just measured
    runtime.costs = measure_ring_costs(comm, runtime.costs)
    return runtime.costs


# --- All-Scan ---------------------------------------------------------------------------------

def pipeline_call(comm: Any, state: np.ndarray, blocks: int) -> Callable[[], Any]:
    """One pipeline scan of ``state`` in ``blocks`` blocks, as a call to time."""
    return lambda: all_scan(state, "sum", comm=comm, algorithm="pipeline", blocks=blocks, validate=False)


def measure_pipeline_block(comm: Any) -> float:
    """Seconds per extra pipeline block: the median of ``BATCHES`` batches with ``MANY_BLOCKS``
    blocks less the median with one, over the extra blocks. Collective; 0 at one rank."""
    if comm.size < 2:
        return 0.0
    state = np.zeros(ROWS, dtype=np.float32)
    calls = {blocks: pipeline_call(comm, state, blocks) for blocks in (1, MANY_BLOCKS)}
    for call in calls.values():  # warm the path and the pools up
        timed(call, CALLS, comm)
    times: dict = {blocks: [] for blocks in calls}
    for _ in range(BATCHES):
        for blocks, call in calls.items():
            times[blocks].append(timed(call, CALLS, comm))
    return max(0.0, (statistics.median(times[MANY_BLOCKS]) - statistics.median(times[1])) / (MANY_BLOCKS - 1))


def _probe_state(op: str) -> Any:
    """A small state for ``op``: ``ROWS`` float32 values, or an affine pair of them."""
    return (np.ones(ROWS, dtype=np.float32), np.zeros(ROWS, dtype=np.float32)) if op == "affine" \
        else np.zeros(ROWS, dtype=np.float32)


def measure_call_costs(comm: Any, links: ScanLinks) -> dict[str, LinkCost]:
    """Per code path, what a call on a small state, called alone after a barrier (the latency
    ``auto`` is judged by), takes beyond the model's messages at ``links`` (whose own call costs are
    left out): :class:`LinkCost` with β 0 under :func:`call_name`, never below 0. The paths take
    turns over ``BATCHES`` batches and each keeps its quickest batch: a slow spell of a shared
    machine only adds, and one that met a single path's batches would otherwise turn the choice
    between paths. Collective; empty at one rank."""
    if comm.size < 2:
        return {}
    messages_only = dataclasses.replace(links, calls=())
    states = {path: _probe_state(op) for path, (_, op) in CALL_PROBES.items()}
    calls = {path: (lambda state=states[path], algorithm=algorithm, op=op:
                    all_scan(state, op, comm=comm, algorithm=algorithm, validate=False))
             for path, (algorithm, op) in CALL_PROBES.items()}
    for call in calls.values():  # warm each path up
        median_call(call, 2, comm)
    times: dict = {path: [] for path in CALL_PROBES}
    for _ in range(BATCHES):
        for path, call in calls.items():
            times[path].append(median_call(call, CALLS, comm))
    return {call_name(path): LinkCost(max(0.0, min(times[path]) - predict_allscan(
        algorithm, payload_bytes(states[path]), comm.size, messages_only)), 0.0)
        for path, (algorithm, _) in CALL_PROBES.items()}


def measure_mpi_rounds(comm: Any) -> dict[str, LinkCost]:
    """α-β of one round of MPI's own scan (``Exscan``, recursive doubling: ⌈log₂p⌉ rounds) up to
    ``MPI_ROUND_SPLIT`` bytes and beyond, under the names of ``MPI_ROUNDS``: its latency at ``ROWS``
    float32, at the split and at ``LARGE_SCAN`` bytes (the median call of each of ``BATCHES``
    batches taken in turns, the quickest batch per size, as for the call costs: a slow spell of a
    shared machine only adds, and one that met a single size would bend the line), each piece
    fitted between its two ends and divided by the rounds. Collective; needs two ranks or more."""
    sizes = (ROWS * 4, MPI_ROUND_SPLIT, LARGE_SCAN)
    buffers = {n: (np.ones(n // 4, dtype=np.float32), np.empty(n // 4, dtype=np.float32)) for n in sizes}
    calls = {n: (lambda x=x, out=out: comm.Exscan(x, out, MPI.SUM)) for n, (x, out) in buffers.items()}
    for call in calls.values():  # warm up
        median_call(call, 2, comm)
    times: dict = {n: [] for n in sizes}
    for _ in range(BATCHES):
        for n, call in calls.items():
            times[n].append(median_call(call, CALLS, comm))
    rounds = (comm.size - 1).bit_length()
    per_round = [min(times[n]) / rounds for n in sizes]
    return {name: _line(sizes[i], per_round[i], sizes[i + 1], per_round[i + 1]) for i, name in enumerate(MPI_ROUNDS)}


def _line(small: int, small_s: float, large: int, large_s: float) -> LinkCost:
    """The α-β line through (bytes, seconds) ``(small, small_s)`` and ``(large, large_s)``: a piece of
    a curve, so α may be below 0 where the piece starts past 0 bytes; β is never 0 or below (a
    noisy pair whose larger size took less gives a flat line)."""
    beta = max((large_s - small_s) / (large - small), 1e-15)
    return LinkCost(small_s - small * beta, beta)


def measure_scan_costs(comm: Any, topology: Topology, costs: CostTable) -> CostTable:
    """``costs`` with everything All-Scan's model measures: the chain and shift schedules, the
    pipeline block, a round of MPI's own scan (not under link emulation) and the call costs.
    Collective; ``costs`` as they are at one rank."""
    schedules = measure_schedule_costs(comm, topology)
    if not schedules:
        return costs
    costs = costs.with_measured(chain=schedules[CHAIN], shift=schedules[SHIFT],
                                pipeline_block=measure_pipeline_block(comm))
    if not topology.emulate:  # MPI's scan pays none of the emulated links' time: priced by them instead
        costs = costs.with_measured(calls={**costs.calls, **measure_mpi_rounds(comm)})
    return costs.with_measured(calls={**costs.calls, **measure_call_costs(comm, scan_links(costs, topology))})


# --- the rings --------------------------------------------------------------------------------

def ring_sizes(p: int) -> tuple[int, int]:
    """The rings' small and large buffer on ``p`` ranks, bytes (multiples of 4p)."""
    return p * SMALL_PIECE, max(p * SMALL_PIECE, min(p * LARGE_PIECE, LARGE_BUFFER) // (4 * p) * (4 * p))


def measure_ring_costs(comm: Any, costs: CostTable) -> CostTable:
    """``costs`` with, per ring algorithm, the α-β of one step, and MPI's allreduce over ``comm``:
    medians of ``RING_BATCHES`` batches at the small and the large size, fitted. Collective;
    ``costs`` as they are at one rank."""
    p = comm.size
    if p < 2:
        return costs
    sizes = ring_sizes(p)
    calls = {(algorithm, n): (lambda x=np.ones(n // 4, dtype=np.float32), algorithm=algorithm:
                              allreduce(x, comm=comm, algorithm=algorithm, validate=False))
             for algorithm in (*STEPPED, "mpi") for n in sizes}
    for call in calls.values():  # warm the paths and the pools up
        timed(call, 1, comm)
    times: dict[tuple[str, int], list[float]] = {key: [] for key in calls}
    for _ in range(RING_BATCHES):
        for key, call in calls.items():
            times[key].append(timed(call, RING_CALLS, comm))

    def fit(algorithm: str, per_call: int, unit: Callable[[int], float]) -> LinkCost:
        """α-β from the two medians: seconds per ``per_call``-th of a call, bytes ``unit(n)``."""
        small, large = sizes
        return fit_link_cost(statistics.median(times[algorithm, small]) / per_call,
                             statistics.median(times[algorithm, large]) / per_call, unit(small), unit(large))

    steps = {algorithm: fit(algorithm, 2 * phase_steps(algorithm, p), lambda n: step_bytes(algorithm, n, p))
             for algorithm in STEPPED}
    return costs.with_measured(steps={**costs.steps, **steps},
                               calls={**costs.calls, MPI_ALLREDUCE: fit("mpi", 1, float)})
