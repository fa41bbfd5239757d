"""Memos that let ``auto`` consult the cost model on every call for the price of a lookup: the
costs of a rank set, worked out again only when the runtime's link costs change, and the model's
choice per call shape at those costs."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from hpcrt.core.runtime import get_runtime
from hpcrt.topology.table import Topology

_MAX_ENTRIES = 4096
"""Entries a memo keeps before it starts over."""
Costs = TypeVar("Costs")


class LinkMemo(Generic[Costs]):
    """Per rank set (world ranks), what ``derive(topology, ranks)`` gave for the runtime's topology."""

    def __init__(self, derive: Callable[[Topology, list[int]], Costs]):
        self._derive = derive
        self._known: dict = {}

    def get(self, ranks: tuple[int, ...]) -> Costs:
        """The derived costs; the same object until the topology or its link costs change."""
        topology = get_runtime().topology
        known = self._known.get(ranks)
        if known is None or known[0] is not topology or known[1] != topology.link_costs:
            if len(self._known) >= _MAX_ENTRIES:
                self._known.clear()
            known = self._known[ranks] = (topology, dict(topology.link_costs), self._derive(topology, list(ranks)))
        return known[2]


class ChoiceMemo:
    """``choose(costs, *shape)`` remembered. Keyed by the identity of ``costs`` (a :class:`LinkMemo`
    hands out one object until the costs change, and hashing it on every call is a cost of its own);
    an entry keeps its costs alive, so their id is not reused while it stands."""

    def __init__(self, choose: Callable[..., Any]):
        self._choose = choose
        self._known: dict = {}

    def get(self, costs: Any, *shape: Any) -> Any:
        """The choice for ``costs`` (the object a LinkMemo handed out) and the call's ``shape`` (hashable)."""
        key = (id(costs), *shape)
        known = self._known.get(key)
        if known is None or known[0] is not costs:
            if len(self._known) >= _MAX_ENTRIES:
                self._known.clear()
            known = self._known[key] = (costs, self._choose(costs, *shape))
        return known[1]
