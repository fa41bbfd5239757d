"""α-β cost model of the All-Scan algorithms: predicted time of each, the pipeline's block
count, and the choice ``algorithm="auto"`` makes. ``nbytes`` is the whole state (both arrays of
an affine pair); ``link`` the worst link along the chain."""

from __future__ import annotations

import math
from typing import Optional

from hpcrt._src.topology import LinkCost

ALGORITHMS = ("pipeline", "allgather", "mpi", "ring")
"""In this order ``auto`` breaks ties."""


def _log2_ceil(p: int) -> int:
    return (p - 1).bit_length()


def predict_allscan(algorithm: str, nbytes: float, p: int, link: LinkCost, blocks: Optional[int] = None) -> float:
    """Predicted seconds of one All-Scan; ``blocks`` (pipeline only) defaults to :func:`best_blocks`.

    pipeline (p−1+K)(α+nβ/K); allgather ⌈log₂p⌉α+(p−1)nβ; ring (p−1)(α+nβ);
    mpi (recursive doubling) ⌈log₂p⌉(α+nβ).
    """
    if p <= 1:
        return 0.0
    alpha, beta = link.alpha, link.beta
    if algorithm == "pipeline":
        k = blocks if blocks is not None else best_blocks(nbytes, p, link)
        return (p - 1 + k) * (alpha + nbytes * beta / k)
    if algorithm == "allgather":
        return _log2_ceil(p) * alpha + (p - 1) * nbytes * beta
    if algorithm == "ring":
        return (p - 1) * (alpha + nbytes * beta)
    if algorithm == "mpi":
        return _log2_ceil(p) * (alpha + nbytes * beta)
    raise ValueError(f"unknown All-Scan algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")


def best_blocks(nbytes: float, p: int, link: LinkCost, max_blocks: Optional[int] = None) -> int:
    """The pipeline's block count: K* = √((p−1)·n·β/α), rounded to the better neighbouring
    integer and clamped to [1, max_blocks] (the number of rows of the state)."""
    limit = max(1, max_blocks) if max_blocks is not None else None
    if p <= 1 or nbytes <= 0:
        return 1
    if link.alpha <= 0:
        return limit or 1
    k_star = math.sqrt((p - 1) * nbytes * link.beta / link.alpha)
    candidates = {max(1, math.floor(k_star)), max(1, math.ceil(k_star))}
    if limit is not None:
        candidates = {min(k, limit) for k in candidates}
    return min(sorted(candidates), key=lambda k: predict_allscan("pipeline", nbytes, p, link, k))


def choose_allscan(nbytes: float, p: int, link: LinkCost, max_blocks: Optional[int] = None,
                   blocks: Optional[int] = None) -> tuple:
    """(algorithm, blocks) with the least predicted time; ``blocks`` fixes the pipeline's K."""
    k = blocks if blocks is not None else best_blocks(nbytes, p, link, max_blocks)
    times = {name: predict_allscan(name, nbytes, p, link, k) for name in ALGORITHMS}
    best = min(ALGORITHMS, key=lambda name: times[name])
    return best, (k if best == "pipeline" else 1)
