"""The α-β cost model's measurement, in the same run as the job it serves: a ping-pong between one
representative pair of ranks per link class of the topology (the link alone), and the two ways a
collective's schedule uses the links with every rank of the communicator taking part.

α is the one-way time of a small message, β the extra time per byte of a large one. The ping-pong
takes the median over single round trips (the link, not the machine's hiccups). The schedule
costs — a hop of a token passed along all ranks (``chain``: one message in flight, the others
waiting in MPI, as on a scan's critical path) and a round of a ring shift (``shift``: every rank
sends and receives at once, as in a recursive-doubling or Bruck round and a pipeline's steady
state) — time back-to-back batches and keep their mean, since with more ranks than cores the
waits for a time slice are the cost; the median batch leaves out bursts of other jobs. Each hop
or round does a scan step's memory work besides the message: the incoming bytes are combined
with the rank's own into the outgoing message and copied into its result (where every rank
shifts at once, that work competes for the memory bandwidth the messages use). A shift
round is charged at least the chain hops its host's cores can run only one pair at a time
(:func:`shared_core_hops`), so that one noisy measurement cannot make a round look cheaper than
the cores allow.
Everything goes over the communicator as is, so a topology file's virtual classes measure the real
path under them (on one machine: shared memory), and emulated delays are not seen.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcrt.core.idle_wait import idle_until_all_arrive
from hpcrt.core.tags import LINK_PROBE
from hpcrt.costmodel.model import CHAIN, SCHEDULES, SHIFT
from hpcrt.costmodel.timing import timed
from hpcrt.topology.table import INTRA_NODE, LinkCost, Topology

SMALL_BYTES = 8
LARGE_BYTES = 1 << 20
REPETITIONS = 21
BATCHES = 5
"""Timed batches per schedule and size; each ``PASSES`` passes of the token or rounds of the shift."""
PASSES = 4
SCHEDULE_BYTES = 4 << 20
"""The larger message of the chain and shift schedules: past the caches, where a scan of a large
state runs (a hop's bytes at 1 MiB cost half what they cost at 8–64 MiB on the build machine, and
the pipeline then took 1.6–1.94x its prediction there)."""


def representative_pairs(topology: Topology) -> dict[str, tuple[int, int]]:
    """For each link class joining two ranks of the job, its lowest pair of ranks."""
    members = {node: topology.ranks_on(node) for node in topology.nodes}
    pairs: dict[str, tuple[int, int]] = {}
    for ranks in members.values():
        if len(ranks) > 1:
            pairs.setdefault(INTRA_NODE, (ranks[0], ranks[1]))
    leaders = [ranks[0] for ranks in members.values()]
    for i, src in enumerate(leaders):
        for dst in leaders[i + 1:]:
            pairs.setdefault(topology.link_class(src, dst), (src, dst))
    return pairs


def ping_pong(comm: Any, pair: tuple[int, int], nbytes: int, repetitions: int = REPETITIONS) -> float:
    """Median one-way time in seconds of ``nbytes`` between the pair; only the pair calls this.

    Every round trip is a sample of its own, so a few preempted ones (a shared machine) do not
    move the median; the first round trip warms the path up and is dropped.
    """
    peer = pair[1] if comm.rank == pair[0] else pair[0]
    buf = np.zeros(nbytes, dtype=np.uint8)
    samples = []
    for _ in range(repetitions + 1):
        start = time.perf_counter()
        if comm.rank == pair[0]:
            comm.Send(buf, peer, LINK_PROBE)
            comm.Recv(buf, peer, LINK_PROBE)
        else:
            comm.Recv(buf, peer, LINK_PROBE)
            comm.Send(buf, peer, LINK_PROBE)
        samples.append((time.perf_counter() - start) / 2)
    return statistics.median(samples[1:])


def fit_link_cost(small: float, large: float, small_bytes: int = SMALL_BYTES,
                  large_bytes: int = LARGE_BYTES) -> LinkCost:
    """α from the small message, β from the slope between the two (never zero or negative)."""
    slope = (large - small) / (large_bytes - small_bytes)
    beta = slope if slope > 0 else large / large_bytes
    return LinkCost(alpha=small, beta=beta)


def measure_link_costs(comm: Any, topology: Topology, repetitions: int = REPETITIONS) -> dict[str, LinkCost]:
    """α-β of every link class present, measured pair by pair; the same dict on every rank.

    Collective over ``comm`` (whose ranks are the topology's). At one rank, or with every rank on
    one node alone, there is no pair and the result is empty: callers keep nominal costs, e.g.
    ``runtime.costs = runtime.costs.with_measured(links=measure_link_costs(runtime.comm, runtime.topology))``.
    """
    measured: dict[str, LinkCost] = {}
    for link_class, pair in representative_pairs(topology).items():
        if comm.rank in pair:
            small = ping_pong(comm, pair, SMALL_BYTES, repetitions)
            large = ping_pong(comm, pair, LARGE_BYTES, repetitions)
            if comm.rank == pair[0]:
                measured[link_class] = fit_link_cost(small, large)
        idle_until_all_arrive(comm)
    merged: dict[str, LinkCost] = {}
    for part in comm.allgather(measured):
        merged.update(part)
    return merged


class _ScanStep:
    """The buffers of one rank's step of a scan schedule: its operand, the message coming in, the
    message going out and its result. A step does what the pipeline does per block: the incoming
    message combined with the operand straight into the outgoing one, and kept as the result."""

    def __init__(self, nbytes: int):
        # Written once here, so that no page is first touched inside the timed steps.
        self.mine, self.incoming, self.outgoing, self.kept = (np.full(nbytes, 1, dtype=np.uint8) for _ in range(4))

    def combine(self) -> None:
        np.add(self.incoming, self.mine, out=self.outgoing)
        self.kept[...] = self.incoming


def token_pass(comm: Any, nbytes: int, passes: int = PASSES) -> float:
    """Mean seconds per hop of ``passes`` trips of a token 0 → 1 → … → p−1 → 0, each rank
    combining what it receives before it forwards it, as a scan's chain does (the slowest rank's)."""
    rank, size = comm.rank, comm.size
    step = _ScanStep(nbytes)

    def trip() -> None:
        if rank == 0:
            comm.Send(step.outgoing, 1, LINK_PROBE)
        comm.Recv(step.incoming, (rank - 1) % size, LINK_PROBE)
        step.combine()
        if rank != 0:
            comm.Send(step.outgoing, (rank + 1) % size, LINK_PROBE)

    return timed(trip, passes, comm) / size


def ring_shift(comm: Any, nbytes: int, passes: int = PASSES, combine: bool = True) -> float:
    """Mean seconds per round of ``passes`` rounds in which every rank sends right and receives from
    the left all at once (with ``combine``, then combines, as in a pipeline's steady state): the
    slowest rank's. Collective."""
    rank, size = comm.rank, comm.size
    step = _ScanStep(nbytes)

    def round_() -> None:
        comm.Sendrecv(step.outgoing, (rank + 1) % size, LINK_PROBE, step.incoming, (rank - 1) % size, LINK_PROBE)
        if combine:
            step.combine()

    return timed(round_, passes, comm)


def shift_link_cost(comm: Any, batches: int = BATCHES) -> LinkCost:
    """α-β of the real path with every rank exchanging with its ring neighbours at once, messages
    alone (no combine), fitted from the medians of ``batches`` batches of the small and the large
    message. Collective."""
    return fit_link_cost(*(statistics.median(ring_shift(comm, nbytes, combine=False) for _ in range(batches))
                           for nbytes in (SMALL_BYTES, LARGE_BYTES)))


_SCHEDULE_TIMERS = {CHAIN: token_pass, SHIFT: ring_shift}


def shared_core_hops(comm: Any, topology: Topology) -> float:
    """Chain hops' worth of time, at least, of a round in which every rank sends: on each host its
    ranks over the hops its cores run side by side (a hop keeps a sender and a receiver busy), the
    most over hosts. Collective, so every rank gets the same; below 1 where cores are plenty."""
    host = topology.ranks[comm.rank].host
    ranks_here = sum(r.host == host for r in topology.ranks)
    side_by_side = max(1, len(os.sched_getaffinity(0)) // 2)
    return comm.allreduce(ranks_here / side_by_side, op=MPI.MAX)


def _no_faster_than(measured: LinkCost, hops: float, hop: LinkCost) -> LinkCost:
    """``measured``, raised to ``hops`` times ``hop`` in α and in β where that is more."""
    return LinkCost(max(measured.alpha, hops * hop.alpha), max(measured.beta, hops * hop.beta))


def measure_schedule_costs(comm: Any, topology: Topology, batches: int = BATCHES) -> dict[str, LinkCost]:
    """α-β of a ``chain`` hop and a ``shift`` round with every rank of ``comm`` (the topology's)
    taking part; empty at one rank. Collective; batches of the two alternate, so load from other
    jobs meets both alike. A shift round is charged no less than :func:`shared_core_hops` chain
    hops: with more ranks than cores the round cannot move its bytes side by side, whatever the
    noise of one measurement says."""
    if comm.size < 2:
        return {}
    times: dict = {(schedule, nbytes): [] for schedule in SCHEDULES for nbytes in (SMALL_BYTES, SCHEDULE_BYTES)}
    for nbytes in (SMALL_BYTES, SCHEDULE_BYTES):
        for schedule in SCHEDULES:
            _SCHEDULE_TIMERS[schedule](comm, nbytes, 1)  # warm the path and the allocator up
        for _ in range(batches):
            for schedule in SCHEDULES:
                times[schedule, nbytes].append(_SCHEDULE_TIMERS[schedule](comm, nbytes))
    chain, shift = (fit_link_cost(statistics.median(times[schedule, SMALL_BYTES]),
                                  statistics.median(times[schedule, SCHEDULE_BYTES]), SMALL_BYTES, SCHEDULE_BYTES)
                    for schedule in SCHEDULES)
    return {CHAIN: chain, SHIFT: _no_faster_than(shift, shared_core_hops(comm, topology), chain)}
