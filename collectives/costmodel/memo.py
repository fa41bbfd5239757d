"""Memos that let ``auto`` consult the cost model on every call for the price of a lookup: the
costs of a rank set, worked out again only when the runtime's cost table is replaced, and the
model's choice per call shape at those costs. Each choice handed to a call is also noted, so that
:func:`auto_ran` can say what the calls of a block of code ran (the bench job's ``ran`` column)."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

from hpcrt.core.runtime import get_runtime
from hpcrt.costmodel.table import CostTable
from hpcrt.topology.table import Topology

_MAX_ENTRIES = 4096
"""Entries a memo keeps before it starts over."""
Costs = TypeVar("Costs")
_WATCHES: list[Counter] = []
"""The open :func:`auto_ran` blocks' tallies, innermost last."""


class LinkMemo(Generic[Costs]):
    """Per rank set (world ranks), what ``derive(costs, topology, ranks)`` gave for the runtime's
    cost table and topology."""

    def __init__(self, derive: Callable[[CostTable, Topology, list[int]], Costs]):
        self._derive = derive
        self._known: dict = {}

    def get(self, ranks: tuple[int, ...]) -> Costs:
        """The derived costs; the same object until the runtime's cost table is replaced."""
        runtime = get_runtime()
        costs = runtime.costs
        known = self._known.get(ranks)
        if known is None or known[0] is not costs or known[1] is not runtime.topology:
            if len(self._known) >= _MAX_ENTRIES:
                self._known.clear()
            known = self._known[ranks] = (costs, runtime.topology,
                                          self._derive(costs, runtime.topology, list(ranks)))
        return known[2]


class ChoiceMemo:
    """``choose(costs, *shape)`` remembered, for the collective ``family``. Keyed by the identity of
    ``costs`` (a :class:`LinkMemo` hands out one object until the table changes, and hashing it on
    every call is a cost of its own); an entry keeps its costs alive, so their id is not reused
    while it stands. ``label(choice)`` names a choice in :func:`auto_ran`'s tally."""

    def __init__(self, family: str, choose: Callable[..., Any], label: Callable[[Any], str] = str):
        self.family = family
        self._choose = choose
        self._label = label
        self._known: dict = {}

    def get(self, costs: Any, *shape: Any) -> Any:
        """The choice for ``costs`` (the object a LinkMemo handed out) and the call's ``shape`` (hashable)."""
        choice, ran = self.entry(costs, *shape)
        if _WATCHES:
            _WATCHES[-1][ran] += 1
        return choice

    def entry(self, costs: Any, *shape: Any) -> tuple[Any, tuple[str, str]]:
        """(choice, what :func:`auto_ran` tallies for it), not tallied: for a :class:`PlanChoice`."""
        key = (id(costs), *shape)
        known = self._known.get(key)
        if known is None or known[0] is not costs:
            if len(self._known) >= _MAX_ENTRIES:
                self._known.clear()
            choice = self._choose(costs, *shape)
            known = self._known[key] = (costs, choice, (self.family, self._label(choice)))
        return known[1], known[2]


class PlanChoice:
    """The ``auto`` choice of one call shape's plan on one transport (a plan is kept per
    communicator): what ``choices`` picks for ``shape`` at ``links``' costs of the transport's
    ranks, worked out again only when the runtime's cost table is replaced, so that a repeated call
    pays one identity check (a transport's topology never changes)."""

    __slots__ = ("_transport", "_choices", "_links", "_shape", "_known")

    def __init__(self, transport: Any, choices: ChoiceMemo, links: LinkMemo, *shape: Any):
        self._transport = transport
        self._choices = choices
        self._links = links
        self._shape = shape
        self._known: tuple = (None, None, None)

    def get(self) -> Any:
        """The choice, tallied in :func:`auto_ran` as :meth:`ChoiceMemo.get` would."""
        known = self._known
        if known[0] is not get_runtime().costs:
            known = self._made()
        if _WATCHES:
            _WATCHES[-1][known[2]] += 1
        return known[1]

    def runs(self, label: str) -> bool:
        """Whether the choice is the one ``label`` names (as :func:`auto_ran` names it), tallied only
        where it is: the caller then runs it, and a call that goes elsewhere is tallied there."""
        known = self._known
        if known[0] is not get_runtime().costs:
            known = self._made()
        if known[2][1] != label:
            return False
        if _WATCHES:
            _WATCHES[-1][known[2]] += 1
        return True

    def _made(self) -> tuple:
        """(cost table, choice, tally key) made at the runtime's cost table, and kept."""
        costs = get_runtime().costs
        self._known = (costs, *self._choices.entry(self._links.get(self._transport.world_ranks), *self._shape))
        return self._known


@contextlib.contextmanager
def auto_ran() -> Iterator[Counter]:
    """Tally, per (family, algorithm), what the ``auto`` calls made inside the block ran, taken as
    each call resolved ``auto`` (a choice that differed between calls shows as two entries; a call
    that then failed its agreement across ranks may count too)."""
    tally: Counter = Counter()
    _WATCHES.append(tally)
    try:
        yield tally
    finally:
        _WATCHES.remove(tally)


def tally_label(tallies: list[Counter]) -> Optional[str]:
    """What the ``auto`` calls of a timed loop ran, as each resolved it (``ChoiceMemo``), from every
    rank's tally: one name when all calls on all ranks ran the same, else each with its count
    (``mpi ×20, ring ×14``), prefixed per rank where the ranks' tallies differ; None without auto."""
    def one(tally: Counter) -> str:
        if len(tally) == 1:
            return next(iter(tally))[1]
        return ", ".join(f"{algorithm} ×{count}" for (_, algorithm), count in tally.most_common())

    if not any(tallies):
        return None
    if all(tally == tallies[0] for tally in tallies):
        return one(tallies[0])
    return "; ".join(f"rank {rank}: {one(tally)}" for rank, tally in enumerate(tallies))
