"""What the ring collectives' algorithms cost on a communicator, measured with hpcrt's own
allreduce: per ring algorithm, a step's α (hpcrt's work per step and the messages' latency) and β
per byte of the piece a lane moves; and MPI's allreduce, α-β of a whole call. A ping-pong shows
neither hpcrt's work, nor how the bidirectional ring's two lanes share a rank's links and cores,
nor what MPI's reductions add to its messages; these give the rings' model all three."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcrt._src.costmodel import fit_link_cost
from hpcrt._src.topology import LinkCost

from .ring_cost import STEPPED, lanes, mpi_allreduce_key, ring_step_key
from .rings import allreduce

SMALL_PIECE = 8
LARGE_PIECE = 1 << 20
"""Bytes of the piece a lane moves per step in the two measured sizes; MPI's allreduce is measured
on the ring's two buffers, ``p`` such pieces. The large piece is past the caches: at a few hundred
KiB a step's time hangs on where malloc happened to put the step's result beside its input (2×
apart on the 2-core VM between two placements of the same buffer)."""
BATCHES = 7
CALLS = 5


def allreduce_batch(comm: Any, x: np.ndarray, algorithm: str, calls: int = CALLS) -> float:
    """Seconds per call of ``calls`` back-to-back allreduces of ``x`` (the slowest rank's). Collective."""
    comm.Barrier()
    start = time.perf_counter()
    for _ in range(calls):
        allreduce(x, comm=comm, algorithm=algorithm, validate=False)
    return comm.allreduce((time.perf_counter() - start) / calls, op=MPI.MAX)


def measure_ring_steps(comm: Any) -> dict[str, LinkCost]:
    """Per ring algorithm, the α-β of one step (keyed by :func:`ring_step_key`), and of MPI's
    allreduce over ``comm``'s size (keyed by :func:`mpi_allreduce_key`): medians of ``BATCHES``
    batches at ``SMALL_PIECE`` and ``LARGE_PIECE`` pieces, fitted. Batches take turns, so load from
    other jobs meets every algorithm and size alike. Collective; empty at one rank."""
    p = comm.size
    if p < 2:
        return {}
    algorithms = ("mpi", *STEPPED)
    buffers = {(algorithm, piece): np.ones(lanes(algorithm, p) * p * piece // 4, dtype=np.float32)
               for algorithm in algorithms for piece in (SMALL_PIECE, LARGE_PIECE)}
    for (algorithm, _), x in buffers.items():  # warm the paths and the pools up
        allreduce_batch(comm, x, algorithm, calls=1)
    times: dict = {key: [] for key in buffers}
    for _ in range(BATCHES):
        for (algorithm, piece), x in buffers.items():
            times[algorithm, piece].append(allreduce_batch(comm, x, algorithm))

    def fit(algorithm: str, per_call: int, unit: int) -> LinkCost:
        """α-β from the two medians: seconds per ``per_call``-th of a call, bytes in ``unit``s of a piece."""
        small, large = (statistics.median(times[algorithm, piece]) / per_call for piece in (SMALL_PIECE, LARGE_PIECE))
        return fit_link_cost(small, large, unit * SMALL_PIECE, unit * LARGE_PIECE)

    measured = {ring_step_key(algorithm): fit(algorithm, 2 * (p - 1), 1) for algorithm in STEPPED}
    measured[mpi_allreduce_key(p)] = fit("mpi", 1, p)
    return measured
