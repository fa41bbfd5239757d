"""The job's topology: per rank its node, local rank, device and NICs, plus α-β link costs
per link class. Every rank holds the whole table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

INTRA_NODE = "intra"
NIC_KINDS = ("ib", "roce", "eth")
# Nominal costs for discovered topologies, until a ping-pong measures them (α in s, β in s/byte).
NOMINAL_LINK_COSTS = {
    INTRA_NODE: (1e-6, 1 / 10e9),
    "ib": (2e-6, 1 / 25e9),
    "roce": (4e-6, 1 / 12.5e9),
    "eth": (30e-6, 1 / 1.25e9),
}


@dataclass(frozen=True)
class NIC:
    """A network interface: its name, kind (ib, roce or eth) and rate in Gb/s when known."""

    name: str
    kind: str
    rate_gbps: Optional[float] = None


@dataclass(frozen=True)
class Device:
    """The compute device a rank runs on: ``cpu`` or ``gpu`` (with its index)."""

    kind: str
    index: Optional[int] = None
    model: str = ""
    memory_bytes: Optional[int] = None


@dataclass(frozen=True)
class LinkCost:
    """α-β cost of one link class: time(n bytes) = alpha + n * beta."""

    alpha: float
    beta: float

    def time(self, nbytes: float) -> float:
        return self.alpha + nbytes * self.beta


@dataclass(frozen=True)
class RankInfo:
    """One row of the topology table."""

    rank: int
    node: str
    local_rank: int
    device: Device
    nics: tuple = ()
    nic_class: str = "eth"
    host: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Topology:
    """Ranks × nodes × devices × NICs, and the cost of each link class.

    ``source`` is ``"discovered"`` or the path of the topology file that defined it; with
    ``emulate`` the transport delays messages that cross a (virtual) node by their link's cost.
    ``groups`` are sub-node groups of ranks (e.g. the GCD pairs of a Frontier node), each inside
    one node, from a topology file's per-node ``groups``; empty when none were given.
    """

    ranks: tuple
    link_costs: dict = field(default_factory=dict)
    mixed_class: Optional[str] = None
    source: str = "discovered"
    emulate: bool = False
    groups: tuple = ()

    @property
    def size(self) -> int:
        return len(self.ranks)

    @property
    def nodes(self) -> list[str]:
        """Node names in order of their lowest rank."""
        return list(dict.fromkeys(r.node for r in self.ranks))

    def ranks_on(self, node: str) -> list[int]:
        return [r.rank for r in self.ranks if r.node == node]

    def node_of(self, rank: int) -> str:
        return self.ranks[rank].node

    def nic_class_of_node(self, node: str) -> str:
        return next(r.nic_class for r in self.ranks if r.node == node)

    def link_class(self, src: int, dst: int) -> str:
        """``intra`` inside a node; between nodes their common NIC class, else the mixed class."""
        a, b = self.ranks[src], self.ranks[dst]
        if a.node == b.node:
            return INTRA_NODE
        if a.nic_class == b.nic_class:
            return a.nic_class
        return self.mixed_class or _slower(self.link_costs, a.nic_class, b.nic_class)

    def link_cost(self, src: int, dst: int) -> LinkCost:
        return self.link_costs[self.link_class(src, dst)]

    def slowest_link(self, ranks: Sequence[int], *, ring: bool = True) -> Optional[LinkCost]:
        """The largest α and the largest β over the hops between consecutive ``ranks`` (closing the
        ring unless ``ring`` is false): the pace of a ring or chain schedule. None without a hop."""
        ranks = list(ranks)
        pairs = zip(ranks, ranks[1:] + ranks[:1]) if ring else zip(ranks, ranks[1:])
        hops = [self.link_cost(a, b) for a, b in pairs if a != b]
        if not hops:
            return None
        return LinkCost(max(h.alpha for h in hops), max(h.beta for h in hops))


def _slower(costs: dict, a: str, b: str) -> str:
    """Of two NIC classes, the one with less bandwidth (larger β)."""
    return max((a, b), key=lambda c: costs[c].beta if c in costs else float("inf"))


def nominal_link_costs() -> dict:
    return {name: LinkCost(alpha, beta) for name, (alpha, beta) in NOMINAL_LINK_COSTS.items()}
