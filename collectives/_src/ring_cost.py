"""α-β predictions for the ring collectives and the ``auto`` choice between them and MPI.

``nbytes`` is always the full buffer: the input of allreduce and reduce_scatter, the gathered
result of allgather. The bidirectional ring assumes each rank's links to its two neighbours
are independent (NVLink mesh, torus, per-neighbour links); at p = 2 both halves share the one
neighbour, so it predicts no gain there.
"""

from __future__ import annotations

import math

from hpcrt._src.topology import LinkCost

RING_COLLECTIVES = ("allreduce", "allgather", "reduce_scatter")
ALGORITHMS = ("mpi", "ring", "bidir_ring")


def predict_ring(collective: str, algorithm: str, nbytes: float, p: int, link: LinkCost) -> float:
    """Predicted seconds for ``collective`` over ``p`` ranks with ``algorithm``.

    ring: s·(α + n/p·β), s = 2(p−1) steps for allreduce, p−1 otherwise; bidir_ring: the same
    steps carrying n/(2p) per link (p ≥ 3); mpi: MPICH's choices — allreduce the better of
    recursive doubling ⌈log₂p⌉(α + nβ) and Rabenseifner 2⌈log₂p⌉α + 2(p−1)/p·nβ, allgather and
    reduce_scatter ⌈log₂p⌉α + (p−1)/p·nβ.
    """
    if collective not in RING_COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r}; expected one of {RING_COLLECTIVES}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    if p <= 1:
        return 0.0
    alpha, beta = link.alpha, link.beta
    phases = 2 if collective == "allreduce" else 1
    if algorithm == "mpi":
        rounds = math.ceil(math.log2(p))
        spread = phases * (p - 1) / p * nbytes * beta
        if collective == "allreduce":
            return min(rounds * (alpha + nbytes * beta), 2 * rounds * alpha + spread)
        return rounds * alpha + spread
    per_link = nbytes / p / (2 if algorithm == "bidir_ring" and p >= 3 else 1)
    return phases * (p - 1) * (alpha + per_link * beta)


def choose_ring_algorithm(collective: str, nbytes: float, p: int, link: LinkCost) -> str:
    """The algorithm with the smallest prediction (ties go to mpi, then ring)."""
    return min(ALGORITHMS, key=lambda a: predict_ring(collective, a, nbytes, p, link))
