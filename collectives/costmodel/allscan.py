"""α-β cost model of the All-Scan algorithms: predicted time of each, the pipeline's block
count, and the choice ``algorithm="auto"`` makes. ``nbytes`` is the whole state (both arrays of
an affine pair); ``links`` the costs of the two ways the algorithms use the links (:class:`ScanLinks`,
or one :class:`LinkCost` for both).

A chain hop has one message in flight while the other ranks wait; a shift round has every rank
sending and receiving at once. On ranks with a core each the two cost alike; with more ranks than
cores the round waits for time slices and shares memory bandwidth, which the measured costs show
(``hpcrt.costmodel.links``) and the formulas then charge to the algorithms that run such rounds.
Each of the pipeline's blocks also costs hpcrt's own work per message (posting, waiting, views of
the message, the combine call), measured beside the links (the table's ``pipeline_block``): at a few µs of
message α that work, tens of µs in Python, is what bounds the useful block count. A call also pays
hpcrt's fixed work once (checking the operand, its layout, the result arrays, the generator that
runs the schedule): measured per code path (the table's ``calls`` under ``all_scan/<path>``), it
is what decides between algorithms at small states and few ranks, where the messages cost a few µs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

from hpcrt.costmodel.model import CHAIN, SHIFT, schedule_link
from hpcrt.costmodel.table import CostTable
from hpcrt.topology.table import LinkCost, Topology

ALGORITHMS = ("pipeline", "mpi", "allgather", "ring")
"""In this order ``auto`` breaks ties: the pipeline before the ring (the same code at K = 1), MPI's
own scan before the all-gather (at p = 2 and 3 their messages cost alike, and the all-gather also
combines the gathered states itself)."""
MPI_ROUNDS = ("all_scan/mpi_round", "all_scan/mpi_round_large")
"""The :class:`CostTable` calls that price one round of MPI's own scan (recursive doubling), where
measured: for states up to :data:`MPI_ROUND_SPLIT` bytes and for larger ones. MPI's scan is timed
itself, as a shift round run by hpcrt's messages can cost it wrongly (on 4 ranks of 2 cores twice
what MPICH's Exscan takes), and in two pieces, as its time per byte grows once its buffers leave
the caches (one line through 256 B and 4 MiB put it 1.5x too dear at 128 KiB)."""
MPI_ROUND_SPLIT = 256 << 10
"""Where the two measured pieces of MPI's scan meet, bytes of state."""
CODE_PATHS = ("pipeline", "allgather", "mpi", "mpi_user")
"""The code paths with a call cost of their own: the ring is the pipeline's one-block case; ``mpi``
with an op MPI has built in (sum, max on plain dtypes), ``mpi_user`` with hpcrt's combine called
back from MPI in Python on every round."""


def code_path(algorithm: str, builtin_op: bool = True) -> str:
    """The code path ``algorithm`` runs; ``builtin_op``: whether MPI has the op built in."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown All-Scan algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    if algorithm == "mpi":
        return "mpi" if builtin_op else "mpi_user"
    return "pipeline" if algorithm == "ring" else algorithm


def call_name(path: str) -> str:
    """The call in a :class:`CostTable`'s ``calls`` that prices the fixed cost of one call down code ``path``."""
    return f"all_scan/{path}"


@dataclass(frozen=True)
class ScanLinks:
    """α-β of a chain hop (ring, the pipeline's first block) and of a round in which every rank
    exchanges at once (allgather's rounds, the pipeline's steady state, and MPI's where its own
    rounds were not timed)."""

    chain: LinkCost
    shift: LinkCost
    block: float = 0.0
    """Seconds one more pipeline block adds beyond its bytes, where measured (0: not measured)."""
    calls: tuple[tuple[str, float], ...] = ()
    """(code path, seconds) pairs: hpcrt's fixed work per call down each path (measured, or the
    table's default where not). It is measured on the job's communicator and charged as it is to a
    scan over any of its subsets (the all-gather's and MPI's user-op terms that grow with the rank
    count are then overstated a little)."""
    mpi_rounds: tuple[LinkCost, ...] = ()
    """α-β of one round of MPI's own scan, timed on the job's communicator, up to
    :data:`MPI_ROUND_SPLIT` bytes and beyond (empty: a shift round's)."""

    def mpi_round(self, nbytes: float) -> LinkCost:
        """The α-β of a round of MPI's scan of ``nbytes``: the measured piece it falls in, else a shift round's."""
        if not self.mpi_rounds:
            return self.shift
        return self.mpi_rounds[0] if nbytes <= MPI_ROUND_SPLIT else self.mpi_rounds[-1]

    def call(self, algorithm: str, builtin_op: bool = True) -> float:
        """Seconds of fixed work one call of ``algorithm`` pays besides its messages (0: not measured;
        MPI's user-op path, where not measured, costs at least what its builtin path does)."""
        measured = dict(self.calls)
        path = code_path(algorithm, builtin_op)
        return measured.get(path, measured.get("mpi", 0.0) if path == "mpi_user" else 0.0)

    @property
    def block_alpha(self) -> float:
        """What a later block of the pipeline pays besides its bytes: the block cost, at least the shift's α."""
        return max(self.block, self.shift.alpha)


def as_scan_links(links: Union[ScanLinks, LinkCost]) -> ScanLinks:
    """``links`` as :class:`ScanLinks`; one :class:`LinkCost` stands for both ways."""
    return links if isinstance(links, ScanLinks) else ScanLinks(links, links)


def scan_links(costs: CostTable, topology: Topology, ranks: Optional[list] = None) -> ScanLinks:
    """The costs a scan over ``ranks`` (default: all) pays at ``costs``: the chain along them, the
    shift round them, the pipeline block, the calls (as measured, else the table's ``call_work``)
    and MPI's scan rounds (where both pieces were timed)."""
    calls = tuple((path, costs.call_alpha(call_name(path))) for path in CODE_PATHS)
    mpi_rounds = tuple(costs.call(name) for name in MPI_ROUNDS)
    return ScanLinks(schedule_link(costs, topology, CHAIN, ranks, ring=False),
                     schedule_link(costs, topology, SHIFT, ranks), costs.pipeline_block, calls,
                     () if None in mpi_rounds else mpi_rounds)


def _log2_ceil(p: int) -> int:
    return (p - 1).bit_length()


def _pipeline(nbytes: float, p: int, links: ScanLinks, k: int) -> float:
    """The first block walks p−1 chain hops, each later one arrives a shift round after the previous;
    every hop and round also costs hpcrt's work on a block."""
    chain, shift = links.chain, links.shift
    hop = max(chain.alpha, links.block)
    return (p - 1) * (hop + nbytes * chain.beta / k) + (k - 1) * (links.block_alpha + nbytes * shift.beta / k)


def predict_allscan(algorithm: str, nbytes: float, p: int, links: Union[ScanLinks, LinkCost],
                    blocks: Optional[int] = None, builtin_op: bool = True) -> float:
    """Predicted seconds of one All-Scan; ``blocks`` (pipeline only) defaults to :func:`best_blocks`.

    With chain hop (α_c, β_c), shift round (α_s, β_s) and the measured block cost b (hpcrt's work on
    a block, paid on every hop and round; α_b = max(b, α_s)): pipeline (p−1)(max(α_c, b)+nβ_c/K) +
    (K−1)(α_b+nβ_s/K), which is (p−2+K)(α+nβ/K) when all are alike; ring (p−1)(max(α_c, b)+nβ_c),
    the pipeline's K = 1; allgather (Bruck) ⌈log₂p⌉α_s+(p−1)nβ_s; mpi (recursive doubling) ⌈log₂p⌉(α_s+nβ_s),
    or ⌈log₂p⌉ rounds of MPI's scan as timed (:data:`MPI_ROUNDS`);
    each plus the measured fixed cost of a call down the algorithm's code path (:meth:`ScanLinks.call`;
    ``builtin_op``: whether MPI has the op built in, which decides the ``mpi`` algorithm's path).
    """
    links = as_scan_links(links)
    call = links.call(algorithm, builtin_op)  # also rejects an unknown algorithm
    if p <= 1:
        return call  # no messages, but the call's own work
    shift = links.shift
    if algorithm == "pipeline":
        messages = _pipeline(nbytes, p, links, blocks if blocks is not None else best_blocks(nbytes, p, links))
    elif algorithm == "ring":
        messages = _pipeline(nbytes, p, links, 1)
    elif algorithm == "allgather":
        messages = _log2_ceil(p) * shift.alpha + (p - 1) * nbytes * shift.beta
    else:
        messages = _log2_ceil(p) * links.mpi_round(nbytes).time(nbytes)
    return call + messages


def best_blocks(nbytes: float, p: int, links: Union[ScanLinks, LinkCost], max_blocks: Optional[int] = None) -> int:
    """The pipeline's block count: K* = √(n((p−1)β_c − β_s)/α_b) (√((p−2)nβ/α) when chain and shift
    cost alike), rounded to the better neighbouring integer and clamped to [1, max_blocks] (the
    number of rows of the state); 1 where more blocks cannot pay off."""
    links = as_scan_links(links)
    limit = max(1, max_blocks) if max_blocks is not None else None
    saved_per_byte = (p - 1) * links.chain.beta - links.shift.beta
    if p <= 1 or nbytes <= 0 or saved_per_byte <= 0:
        return 1
    if links.block_alpha <= 0:
        return limit or 1
    k_star = math.sqrt(nbytes * saved_per_byte / links.block_alpha)
    candidates = {max(1, math.floor(k_star)), max(1, math.ceil(k_star))}
    if limit is not None:
        candidates = {min(k, limit) for k in candidates}
    return min(sorted(candidates), key=lambda k: _pipeline(nbytes, p, links, k))


def auto_choice(nbytes: float, p: int, links: Union[ScanLinks, LinkCost], max_blocks: Optional[int] = None,
                blocks: Optional[int] = None, builtin_op: bool = True) -> tuple:
    """What ``algorithm="auto"`` runs: (algorithm, blocks) with the least predicted time; ``blocks``
    fixes the pipeline's K; ``builtin_op``: whether MPI has the op built in (else its scan calls
    hpcrt's combine back)."""
    k = blocks if blocks is not None else best_blocks(nbytes, p, links, max_blocks)
    times = {name: predict_allscan(name, nbytes, p, links, k, builtin_op) for name in ALGORITHMS}
    best = min(ALGORITHMS, key=lambda name: times[name])
    return best, (k if best == "pipeline" else 1)


def ran_label(choice: tuple) -> str:
    """How an :func:`auto_choice` reads in a report: the algorithm, or the pipeline with its block
    count (``pipeline/7``)."""
    algorithm, blocks = choice
    return f"pipeline/{blocks}" if algorithm == "pipeline" else algorithm
