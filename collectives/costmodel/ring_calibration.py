"""What the ring collectives' algorithms cost on a communicator, measured with hpcrt's own
allreduce: per ring algorithm, a step's α (hpcrt's work per step and the messages' latency) and β
per byte a lane moves per step; and MPI's allreduce, α-β of a whole call. A ping-pong shows
neither hpcrt's work, nor how the bidirectional ring's two lanes share a rank's links and cores,
nor what MPI's reductions add to its messages; these give the rings' model all three."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
from mpi4py import MPI

from hpcrt.costmodel.links import fit_link_cost
from hpcrt.topology.table import LinkCost

from hpcrt.collectives.costmodel.rings import STEPPED, mpi_allreduce_key, phase_steps, ring_step_key, step_bytes
from hpcrt.collectives.rings.entry import allreduce

SMALL_PIECE = 8
LARGE_PIECE = 1 << 20
LARGE_BUFFER = 16 << 20
"""The measured sizes: buffers of p pieces of 8 B and of 1 MiB, the large one cut to 16 MiB (at
most 48 MiB a rank, and about as long a call, at any rank count), the same buffers for every
algorithm. Past the caches on purpose: at a few hundred KiB a step's time hangs on where malloc
happened to put the step's result beside its input (2× apart on the 2-core VM between two
placements of the same buffer)."""
BATCHES = 7
CALLS = 5


def allreduce_batch(comm: Any, x: np.ndarray, algorithm: str, calls: int = CALLS) -> float:
    """Seconds per call of ``calls`` back-to-back allreduces of ``x`` (the slowest rank's). Collective."""
    comm.Barrier()
    start = time.perf_counter()
    for _ in range(calls):
        allreduce(x, comm=comm, algorithm=algorithm, validate=False)
    return comm.allreduce((time.perf_counter() - start) / calls, op=MPI.MAX)


def measured_sizes(p: int) -> tuple[int, int]:
    """The small and the large buffer on ``p`` ranks, bytes (multiples of 4p)."""
    return p * SMALL_PIECE, max(p * SMALL_PIECE, min(p * LARGE_PIECE, LARGE_BUFFER) // (4 * p) * (4 * p))


def measure_ring_steps(comm: Any) -> dict[str, LinkCost]:
    """Per ring algorithm, the α-β of one step (keyed by :func:`ring_step_key`), and of MPI's
    allreduce over ``comm`` (keyed by :func:`mpi_allreduce_key`): medians of ``BATCHES`` batches at
    the small and the large size, fitted. Batches take turns, so load from other jobs meets every
    algorithm and size alike. Collective; empty at one rank."""
    p = comm.size
    if p < 2:
        return {}
    sizes = measured_sizes(p)
    buffers = {(algorithm, n): np.ones(n // 4, dtype=np.float32) for algorithm in (*STEPPED, "mpi") for n in sizes}
    for (algorithm, _), x in buffers.items():  # warm the paths and the pools up
        allreduce_batch(comm, x, algorithm, calls=1)
    times: dict[tuple[str, int], list[float]] = {key: [] for key in buffers}
    for _ in range(BATCHES):
        for (algorithm, n), x in buffers.items():
            times[algorithm, n].append(allreduce_batch(comm, x, algorithm))

    def fit(algorithm: str, per_call: int, unit: Callable[[int], float]) -> LinkCost:
        """α-β from the two medians: seconds per ``per_call``-th of a call, bytes ``unit(n)``."""
        small, large = sizes
        return fit_link_cost(statistics.median(times[algorithm, small]) / per_call,
                             statistics.median(times[algorithm, large]) / per_call, unit(small), unit(large))

    measured = {ring_step_key(algorithm): fit(algorithm, 2 * phase_steps(algorithm, p),
                                              lambda n: step_bytes(algorithm, n, p)) for algorithm in STEPPED}
    measured[mpi_allreduce_key(p)] = fit("mpi", 1, float)
    return measured
