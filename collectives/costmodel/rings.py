"""α-β predictions for the ring collectives and the ``auto`` choice between them and MPI.

``nbytes`` is always the full buffer: the input of allreduce and reduce_scatter, the gathered
result of allgather. A phase (a reduce-scatter or an all-gather) of the ring takes p − 1 steps
that each move a piece of n/p bytes; the bidirectional ring's two lanes each carry half of those
bytes in ⌊p/2⌋ steps (p ≥ 3; at p = 2 both directions lead to the one neighbour and it is the
ring). Where the job measured them (:class:`RingCosts`), a step
costs what that algorithm's steps took (hpcrt's work per step, and how two lanes share a rank's
links and cores, which a ping-pong does not show) and MPI's call what MPI's allreduce took, for
collectives over the job's whole communicator; everything is charged no less than the slowest
link's α-β formula; where nothing was measured, a step also pays the table's ``step_work``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

from hpcrt.costmodel.model import bottleneck_link
from hpcrt.costmodel.table import CostTable
from hpcrt.topology.table import LinkCost, Topology

RING_COLLECTIVES = ("allreduce", "allgather", "reduce_scatter")
ALGORITHMS = ("mpi", "ring", "bidir_ring")
STEPPED = ("ring", "bidir_ring")
"""The algorithms that run hpcrt's ring engine, whose steps the job can measure."""
MPI_ALLREDUCE = "allreduce/mpi"
"""The call in a :class:`CostTable`'s ``calls`` that prices MPI's allreduce over the job's ranks (β per byte
of the buffer)."""


@dataclass(frozen=True)
class RingCosts:
    """The slowest link of a ring (what MPI's own algorithms pay per message) and, where measured,
    the α-β of a step of each of hpcrt's ring algorithms."""

    link: LinkCost
    steps: tuple[tuple[str, LinkCost], ...] = ()
    mpi_allreduce: Optional[LinkCost] = None
    """MPI's allreduce over these ranks, as measured (α-β of a whole call), or None."""
    step_work: float = 0.0
    """Seconds added to the link's α for a step that was not measured (the table's ``step_work``)."""

    def step(self, algorithm: str) -> LinkCost:
        """One step of ``algorithm``: as measured, but never cheaper than the slowest link; where
        not measured, the link plus :attr:`step_work`."""
        measured = dict(self.steps).get(algorithm)
        if measured is None:
            return LinkCost(self.link.alpha + self.step_work, self.link.beta)
        return LinkCost(max(measured.alpha, self.link.alpha), max(measured.beta, self.link.beta))


def ring_costs(costs: CostTable, topology: Topology, ranks: Optional[list[int]] = None) -> RingCosts:
    """The costs a ring collective over ``ranks`` (default: all) pays on ``topology`` at ``costs``:
    the slowest link of their ring, and the measured costs where the rank set is the communicator
    they were measured on (a subset's steps and MPI's call would be priced unevenly)."""
    link = bottleneck_link(costs, topology, ranks)
    if ranks is not None and len(ranks) != topology.size:
        return RingCosts(link, step_work=costs.step_work)
    steps = tuple((algorithm, costs.steps[algorithm]) for algorithm in STEPPED if algorithm in costs.steps)
    return RingCosts(link, steps, costs.call(MPI_ALLREDUCE), costs.step_work)


def lanes(algorithm: str, p: int) -> int:
    """Pieces a rank sends per step: two for the bidirectional ring from three ranks, else one."""
    return 2 if algorithm == "bidir_ring" and p >= 3 else 1


def phase_steps(algorithm: str, p: int) -> int:
    """Steps of one phase: p − 1 for the ring, ⌊p/2⌋ for the bidirectional ring from three ranks."""
    return p // 2 if lanes(algorithm, p) == 2 else p - 1


def step_bytes(algorithm: str, nbytes: float, p: int) -> float:
    """Bytes one lane moves per step, on average over a phase: its share of the (p − 1)/p·n bytes
    a rank sends per phase, over the phase's steps (n/p for the ring)."""
    return (p - 1) / p * nbytes / lanes(algorithm, p) / phase_steps(algorithm, p)


def predict_ring(collective: str, algorithm: str, nbytes: float, p: int,
                 costs: Union[RingCosts, LinkCost]) -> float:
    """Predicted seconds for ``collective`` over ``p`` ranks with ``algorithm``.

    ring and bidir_ring: s·(α + piece·β) with s steps of :func:`phase_steps` per phase (two for
    allreduce) and :func:`step_bytes` a piece, at the step's α-β (:meth:`RingCosts.step`); mpi:
    MPICH's choices at the slowest link's — allreduce the better of recursive doubling
    ⌈log₂p⌉(α + nβ) and Rabenseifner 2⌈log₂p⌉α + 2(p−1)/p·nβ, allgather and reduce_scatter
    ⌈log₂p⌉α + (p−1)/p·nβ — or, where more, the measured allreduce α + nβ (allgather and
    reduce_scatter, each one half of Rabenseifner's allreduce, half of it).
    """
    if collective not in RING_COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r}; expected one of {RING_COLLECTIVES}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    if p <= 1:
        return 0.0
    costs = costs if isinstance(costs, RingCosts) else RingCosts(costs)
    phases = 2 if collective == "allreduce" else 1
    if algorithm == "mpi":
        measured = costs.mpi_allreduce.time(nbytes) * phases / 2 if costs.mpi_allreduce is not None else 0.0
        return max(_mpi_formula(collective, nbytes, p, costs.link), measured)
    steps = phases * phase_steps(algorithm, p)
    return steps * costs.step(algorithm).time(step_bytes(algorithm, nbytes, p))


def _mpi_formula(collective: str, nbytes: float, p: int, link: LinkCost) -> float:
    """MPICH's algorithms' messages at ``link``: see :func:`predict_ring`."""
    rounds = math.ceil(math.log2(p))
    spread = (2 if collective == "allreduce" else 1) * (p - 1) / p * nbytes * link.beta
    if collective == "allreduce":
        return min(rounds * (link.alpha + nbytes * link.beta), 2 * rounds * link.alpha + spread)
    return rounds * link.alpha + spread


def auto_choice(collective: str, nbytes: float, p: int, costs: Union[RingCosts, LinkCost]) -> str:
    """What ``algorithm="auto"`` runs: the algorithm with the smallest prediction (ties go to mpi, then ring)."""
    return min(ALGORITHMS, key=lambda a: predict_ring(collective, a, nbytes, p, costs))
