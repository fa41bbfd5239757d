"""Measure, in the running job, what the collectives' cost models use, so that ``auto`` weighs the
costs of this machine and this code: the link classes' α-β (ping-pong), All-Scan's schedules,
pipeline block and call costs, and a step of each ring algorithm."""

from __future__ import annotations

from hpcrt.core.runtime import get_runtime
from hpcrt.costmodel.links import measure_link_costs
from hpcrt.topology.table import LinkCost

from hpcrt.collectives.costmodel.allscan_calibration import measure_scan_costs
from hpcrt.collectives.costmodel.ring_calibration import measure_ring_steps


def calibrate() -> dict[str, LinkCost]:
    """Measure the models' costs on the runtime's communicator and put them into its topology's
    ``link_costs``, where ``auto`` reads them; returns what it measured, the same on every rank.

    The link classes first (not under link emulation, where the topology file's costs are what
    messages pay), then All-Scan's and the rings' costs, measured with their own code over those
    links. Collective; a second or two on 2–16 ranks of one machine (the rings' large buffers take
    most of it); nothing to measure at one rank.
    """
    runtime = get_runtime()
    comm, topology = runtime.comm, runtime.topology
    measured = {} if topology.emulate else measure_link_costs(comm, topology)
    topology.link_costs.update(measured)
    scan = measure_scan_costs(comm, topology)  # over the link classes just measured
    topology.link_costs.update(scan)
    rings = measure_ring_steps(comm)
    topology.link_costs.update(rings)
    return {**measured, **scan, **rings}
