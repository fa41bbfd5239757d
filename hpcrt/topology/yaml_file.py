"""Topology files: YAML that overrides discovery with virtual nodes, NIC classes and link costs,
so multi-node and mixed-NIC logic runs on one machine.

Schema (every key is checked; an unknown one is an error)::

    nodes:                      # in order; ranks is a count (consecutive ranks) or a list
      - name: node-a
        ranks: 2
        nic: {name: ib0, class: ib, rate_gbps: 200}
        groups: [[0, 1]]        # optional: sub-node groups (e.g. GCD pairs) partitioning the node's ranks
    links:                      # one entry per class in use, and 'intra' for inside a node
      intra: {alpha_us: 0.5, bandwidth_gbytes_s: 50}
      ib:    {alpha_us: 2.0, bandwidth_gbytes_s: 25}
    mixed: eth                  # class used between nodes of different classes (default: the slower)
    emulate: false              # delay messages crossing nodes by their link's α-β cost
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import yaml

from hpcrt.topology.table import INTRA_NODE, NIC, NIC_KINDS, LinkCost, RankInfo, Topology

_TOP_KEYS = {"nodes", "links", "mixed", "emulate"}
_NODE_KEYS = {"name", "ranks", "nic", "groups"}
_NIC_KEYS = {"name", "class", "rate_gbps"}
_LINK_KEYS = {"alpha_us", "bandwidth_gbytes_s"}


SHIPPED = Path(__file__).resolve().parent.parent / "topologies"


def resolve_topology_path(name: str | Path) -> Path:
    """A path as given, or the name of a topology shipped with hpcrt (``two_nodes_mixed_nic``)."""
    path = Path(name)
    shipped = SHIPPED / f"{path.name.removesuffix('.yaml')}.yaml"
    return path if path.exists() or path.parent != Path(".") or not shipped.exists() else shipped


def shipped_topologies() -> list[str]:
    """The names of the topology files shipped in ``hpcrt/topologies``."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


class TopologyFileError(ValueError):
    """An invalid topology file; the message names the file, the key and what was expected."""


class _Checker:
    """Builds error messages that name the file and the key path."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, expected: str, got: Any = None) -> None:
        got_text = "" if got is None else f", got {got!r}"
        raise TopologyFileError(f"topology file {self.path}: key '{key}': expected {expected}{got_text}")

    def mapping(self, key: str, value: Any, allowed: set, required: set) -> dict:
        if not isinstance(value, dict):
            self.fail(key, "a mapping", value)
        unknown = sorted(set(value) - allowed)
        if unknown:
            self.fail(f"{key}.{unknown[0]}" if key else unknown[0],
                      f"one of the known keys ({', '.join(sorted(allowed))}); this key is unknown")
        missing = sorted(required - set(value))
        if missing:
            self.fail(f"{key}.{missing[0]}" if key else missing[0], "this key to be present")
        return value

    def positive(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value <= 0:
            self.fail(key, "a positive finite number", value)
        return float(value)


def load_topology_file(path: str | Path, world_size: int, devices: Sequence, hosts: Sequence[str]) -> Topology:
    """Read and check a topology file for a job of ``world_size`` ranks.

    ``devices`` and ``hosts`` are the discovered device and real host name of every rank: a topology
    file replaces nodes and NICs, never what a rank computes on.
    """
    path = resolve_topology_path(path)
    check = _Checker(str(path))
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise TopologyFileError(f"topology file {path}: cannot be read: {exc.strerror}; expected a path or the "
                                f"name of a shipped topology: {', '.join(shipped_topologies())}") from None
    except yaml.YAMLError as exc:
        raise TopologyFileError(f"topology file {path}: not valid YAML: {exc}") from None
    doc = check.mapping("", raw, _TOP_KEYS, {"nodes", "links"})
    links = _parse_links(check, doc["links"])
    node_of_rank: dict[int, tuple[str, int, NIC]] = {}
    groups: list[tuple[int, ...]] = []
    nodes = doc["nodes"]
    if not isinstance(nodes, list) or not nodes:
        check.fail("nodes", "a non-empty list of nodes", nodes)
    next_rank = 0
    names: list[str] = []
    for i, node in enumerate(nodes):
        key = f"nodes[{i}]"
        node = check.mapping(key, node, _NODE_KEYS, {"name", "ranks"})
        name = node["name"]
        if not isinstance(name, str) or not name:
            check.fail(f"{key}.name", "a non-empty string", name)
        if name in names:
            check.fail(f"{key}.name", f"a name no other node has (nodes[{names.index(name)}] is also named "
                       f"'{name}'; give a node's ranks as a list to place them apart)", name)
        names.append(name)
        ranks = _parse_ranks(check, f"{key}.ranks", node["ranks"], next_rank)
        next_rank = max([next_rank] + [r + 1 for r in ranks])
        nic = _parse_nic(check, f"{key}.nic", node.get("nic", {"name": "eth0", "class": "eth"}), links,
                         "" if "nic" in node else " (a node without 'nic' is on class eth)")
        for local_rank, rank in enumerate(ranks):
            if rank in node_of_rank:
                check.fail(f"{key}.ranks", f"ranks not already placed on node '{node_of_rank[rank][0]}'", rank)
            node_of_rank[rank] = (name, local_rank, nic)
        if "groups" in node:
            groups += _parse_groups(check, f"{key}.groups", node["groups"], ranks)
    if sorted(node_of_rank) != list(range(world_size)):
        placed = len(node_of_rank)
        hint = f"; run it on {placed} ranks" if sorted(node_of_rank) == list(range(placed)) else ""
        check.fail("nodes", f"the nodes' ranks to cover exactly ranks 0..{world_size - 1} of this "
                   f"{world_size}-rank job{hint}", f"{placed} rank(s): {sorted(node_of_rank)}")
    mixed = doc.get("mixed")
    if mixed is not None and mixed not in links:
        check.fail("mixed", f"a link class defined under 'links' ({', '.join(sorted(links))})", mixed)
    emulate = doc.get("emulate", False)
    if not isinstance(emulate, bool):
        check.fail("emulate", "true or false", emulate)
    ranks_table = tuple(
        RankInfo(rank, name, local_rank, devices[rank], (nic,), nic.kind, hosts[rank])
        for rank, (name, local_rank, nic) in sorted(node_of_rank.items()))
    return Topology(ranks_table, links, mixed, str(path), emulate, tuple(groups))


def _parse_links(check: _Checker, raw: Any) -> dict:
    if not isinstance(raw, dict) or not raw:
        check.fail("links", "a mapping from link class to {alpha_us, bandwidth_gbytes_s}", raw)
    if INTRA_NODE not in raw:
        check.fail(f"links.{INTRA_NODE}", "the cost of links inside a node to be given")
    links = {}
    for name, cost in raw.items():
        key = f"links.{name}"
        if name != INTRA_NODE and name not in NIC_KINDS:
            check.fail(key, f"a link class named {INTRA_NODE} or a NIC class ({', '.join(NIC_KINDS)})")
        cost = check.mapping(key, cost, _LINK_KEYS, _LINK_KEYS)
        alpha = check.positive(f"{key}.alpha_us", cost["alpha_us"]) * 1e-6
        bandwidth = check.positive(f"{key}.bandwidth_gbytes_s", cost["bandwidth_gbytes_s"]) * 1e9
        links[name] = LinkCost(alpha, 1.0 / bandwidth)
    return links


def _parse_ranks(check: _Checker, key: str, raw: Any, first: int) -> list[int]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw <= 0:
            check.fail(key, "a positive rank count or a list of ranks", raw)
        return list(range(first, first + raw))
    if isinstance(raw, list) and raw and all(isinstance(r, int) and not isinstance(r, bool) and r >= 0
                                             for r in raw):
        return list(raw)
    check.fail(key, "a positive rank count or a non-empty list of non-negative ranks", raw)
    return []


def _parse_groups(check: _Checker, key: str, raw: Any, node_ranks: list[int]) -> list[tuple[int, ...]]:
    """Sub-node groups: non-empty lists of the node's ranks that together hold each rank once."""
    if not isinstance(raw, list) or not raw or not all(isinstance(g, list) and g for g in raw):
        check.fail(key, "a non-empty list of non-empty lists of the node's ranks", raw)
    flat = [r for g in raw for r in g]
    if sorted(flat) != sorted(node_ranks):
        check.fail(key, f"groups that hold each of the node's ranks {node_ranks} exactly once", raw)
    return [tuple(g) for g in raw]


def _parse_nic(check: _Checker, key: str, raw: Any, links: dict, note: str) -> NIC:
    nic = check.mapping(key, raw, _NIC_KEYS, {"class"})
    kind = nic["class"]
    if kind not in NIC_KINDS:
        check.fail(f"{key}.class", f"one of {', '.join(NIC_KINDS)}", kind)
    if kind not in links:
        check.fail(f"links.{kind}", f"link costs for NIC class '{kind}' used by {key}{note}")
    rate = nic.get("rate_gbps")
    return NIC(str(nic.get("name", f"{kind}0")), kind,
               None if rate is None else check.positive(f"{key}.rate_gbps", rate))
