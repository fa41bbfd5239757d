"""The cost model's table: every cost ``auto`` weighs, typed, owned by the runtime (``runtime.costs``).

The topology says what its file or discovery gives (link classes and their nominal or declared
α-β) and stays as it is; calibration measures this machine and this code and makes a new table
(:meth:`CostTable.with_measured`), so a table, once handed out, never changes and the memos of
``auto`` can key on its identity."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, Optional

from hpcrt.topology.table import LinkCost, Topology

UNMEASURED_STEP_WORK = 5e-6
"""hpcrt's own work on a ring step beyond its messages' latency (posting and completing them, the
fold), charged where the steps were not measured: at 8 B a step took about 8 µs on 8–16 ranks of
a 16-core machine (124–265 µs for 2(p − 1) steps), messages included. Without it a link's α alone
would price the Python rings at or below MPI's own call at any size."""
UNMEASURED_CALL_WORK = {"all_scan/pipeline": 23e-6, "all_scan/allgather": 23e-6, "all_scan/mpi": 4e-6,
                        "all_scan/mpi_user": 39e-6}
"""hpcrt's fixed work per call down each All-Scan code path beyond its messages, charged where the
calls were not measured: calibration's probe (64 float32, validate=False) on 2 ranks of the 2-core
build machine took 22–23 µs for the pipeline and the all-gather (the scan handle, its generator and
result arrays), 4 µs for MPI's own scan and 39 µs for MPI calling hpcrt's combine back. Without it
a link's α alone prices every algorithm alike at a few bytes on 2 ranks, and the Python pipeline
wins the tie against MPI's call, five times quicker there."""


@dataclass(frozen=True)
class CostTable:
    """α-β costs by what they price. ``links`` per link class (the topology's, or a ping-pong's);
    ``chain`` and ``shift`` a hop of a token passed along all ranks and a round in which every rank
    exchanges at once; ``steps`` one step of each stepped ring algorithm (β per byte a lane moves);
    ``calls`` the fixed or whole-call cost per ``"<collective>/<code path>"``; ``pipeline_block``
    what one more pipeline block adds beyond its bytes; ``step_work`` what an unmeasured ring step
    adds to its link's α; ``call_work`` the fixed seconds of a call that ``calls`` lacks (not
    measured). Steps, calls and schedules are measured on the runtime's communicator."""

    links: Mapping[str, LinkCost]
    chain: Optional[LinkCost] = None
    shift: Optional[LinkCost] = None
    steps: Mapping[str, LinkCost] = field(default_factory=dict)
    calls: Mapping[str, LinkCost] = field(default_factory=dict)
    pipeline_block: float = 0.0
    step_work: float = UNMEASURED_STEP_WORK
    call_work: Mapping[str, float] = field(default_factory=lambda: dict(UNMEASURED_CALL_WORK))

    @classmethod
    def of(cls, topology: Topology) -> "CostTable":
        """The table of a topology before anything is measured: its own link costs."""
        return cls(dict(topology.link_costs))

    def with_measured(self, **measured: object) -> "CostTable":
        """A new table with ``measured`` fields replaced; ``links`` are merged into the present ones."""
        if "links" in measured:
            measured["links"] = {**self.links, **measured["links"]}  # type: ignore[dict-item]
        return dataclasses.replace(self, **measured)  # type: ignore[arg-type]

    def on(self, topology: Topology) -> Topology:
        """``topology`` with this table's link costs, for the link-level formulas (a copy: the
        topology itself keeps what its file or discovery said)."""
        if all(topology.link_costs.get(name) == cost for name, cost in self.links.items()):
            return topology
        return dataclasses.replace(topology, link_costs={**topology.link_costs, **self.links})

    def call(self, name: str) -> Optional[LinkCost]:
        """The measured cost of call ``name`` (``"<collective>/<code path>"``), or None."""
        return self.calls.get(name)

    def call_alpha(self, name: str) -> float:
        """The fixed seconds of call ``name``: its measured α, else :attr:`call_work`'s, else 0."""
        measured = self.calls.get(name)
        return measured.alpha if measured is not None else self.call_work.get(name, 0.0)

    def entries(self) -> dict[str, LinkCost]:
        """Every cost under one name each, for reports (results.json): the link classes, ``chain``,
        ``shift``, ``ring_step_<algorithm>``, ``call_<collective>/<path>``, ``pipeline_block``."""
        named = dict(self.links)
        named.update({name: cost for name, cost in (("chain", self.chain), ("shift", self.shift)) if cost})
        named.update({f"ring_step_{algorithm}": cost for algorithm, cost in self.steps.items()})
        named.update({f"call_{name}": cost for name, cost in self.calls.items()})
        if self.pipeline_block:
            named["pipeline_block"] = LinkCost(self.pipeline_block, 0.0)
        return named


__all__ = ["CostTable", "UNMEASURED_CALL_WORK", "UNMEASURED_STEP_WORK"]
