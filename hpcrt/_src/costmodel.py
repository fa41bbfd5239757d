"""The α-β cost model's measurement: a ping-pong between one representative pair of ranks per
link class of the topology, in the same run as the job it serves.

α is the one-way time of a small message, β the extra time per byte of a large one (each the
median over single round trips). The ping-pong goes over the communicator as is, so a topology
file's virtual classes measure the real path under them (on one machine: shared memory), and
emulated delays are not seen.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from .topology import INTRA_NODE, LinkCost, Topology

SMALL_BYTES = 8
LARGE_BYTES = 1 << 20
REPETITIONS = 21
_TAG = 7301


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
            comm.Send(buf, peer, _TAG)
            comm.Recv(buf, peer, _TAG)
        else:
            comm.Recv(buf, peer, _TAG)
            comm.Send(buf, peer, _TAG)
        samples.append((time.perf_counter() - start) / 2)
    return statistics.median(samples[1:])


def fit_link_cost(small: float, large: float, small_bytes: int = SMALL_BYTES,
                  large_bytes: int = LARGE_BYTES) -> LinkCost:
    """α from the small message, β from the slope between the two (never zero or negative)."""
    slope = (large - small) / (large_bytes - small_bytes)
    beta = slope if slope > 0 else large / large_bytes
    return LinkCost(alpha=small, beta=beta)


def _idle_until_all_arrive(comm: Any) -> None:
    """Wait at a barrier without spinning, so idle ranks leave the cores to the measured pair."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(1e-4)


def measure_link_costs(comm: Any, topology: Topology, repetitions: int = REPETITIONS) -> dict[str, LinkCost]:
    """α-β of every link class present, measured pair by pair; the same dict on every rank.

    Collective over ``comm`` (whose ranks are the topology's). At one rank, or with every rank on
    one node alone, there is no pair and the result is empty: callers keep nominal costs, e.g.
    ``runtime.topology.link_costs.update(measure_link_costs(runtime.comm, runtime.topology))``.
    """
    measured: dict[str, LinkCost] = {}
    for link_class, pair in representative_pairs(topology).items():
        if comm.rank in pair:
            small = ping_pong(comm, pair, SMALL_BYTES, repetitions)
            large = ping_pong(comm, pair, LARGE_BYTES, repetitions)
            if comm.rank == pair[0]:
                measured[link_class] = fit_link_cost(small, large)
        _idle_until_all_arrive(comm)
    merged: dict[str, LinkCost] = {}
    for part in comm.allgather(measured):
        merged.update(part)
    return merged


def bottleneck_link(topology: Topology, ranks: list[int] | None = None) -> LinkCost:
    """The slowest α and the slowest β among the links of a ring over ``ranks`` (default: all).

    A ring or chain collective runs at the pace of its slowest hop; one rank alone is charged
    the intra-node cost.
    """
    ranks = list(range(topology.size)) if ranks is None else ranks
    return topology.slowest_link(ranks) or topology.link_costs[INTRA_NODE]
