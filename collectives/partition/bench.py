"""The partition benchmark: one ZeRO step (gradient reduce-scatter, forward and backward parameter
all-gathers) timed for flat ZeRO-3, hpZ and the 3-level scheme on this job's ranks, beside the
α-β(-γ) model's prediction, and the model's prediction for 384 GCDs of a Frontier-like machine.

The model charges each link its real path plus, under link emulation, the topology file's α-β for
links that cross nodes (the transport's hold), and γ per byte folded in during the reduce-scatter.
The real path's α-β (:func:`hpcrt.costmodel.links.shift_link_cost`) and γ are measured in this run
with every rank at work at once, as in a ring step (on a machine with fewer cores than ranks an
isolated ping-pong would miss the contention).
Command line: ``mpiexec -n 4 python -m hpcrt.collectives.bench partition --topology two_nodes_emulated``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any, Optional, Sequence

import numpy as np

from hpcrt.core.runtime import get_runtime
from hpcrt.costmodel.links import shift_link_cost
from hpcrt.costmodel.timing import call_samples
from hpcrt.topology.table import Device, LinkCost, RankInfo, Topology

from hpcrt.collectives.comm.linkbytes import count_link_bytes
from hpcrt.collectives.costmodel.partition import inter_node_bytes, predict_step, step_link_bytes
from hpcrt.collectives.partition.hierarchical import HierarchicalPartition
from hpcrt.collectives.partition.plan import make_plan

FRONTIER_LINKS = {"pair": LinkCost(2e-6, 1 / 200e9), "node": LinkCost(3e-6, 1 / 50e9), "net": LinkCost(5e-6, 1 / 25e9)}
"""Frontier-like links: the two GCDs of one MI250X (Infinity Fabric, 200 GB/s), GCDs of different
MI250X in a node (50 GB/s), nodes (one 25 GB/s Slingshot NIC per MI250X)."""
FRONTIER_PAPER_RATIO = 1.71
"""TFLOPS/GPU of the 3-level scheme over ZeRO++ at 384 GCDs, 20B GPT (Xu et al., 2025)."""


def zero_step(part: HierarchicalPartition, grad: Any, primary: Any, params: Optional[Any] = None,
              inplace: bool = False) -> tuple[Any, Any]:
    """One step's communication: the forward all-gather (with two or more levels through the
    secondary refresh), the backward all-gather (from the secondary when there is one) and the
    gradient reduce-scatter (inside ``grad`` with ``inplace``). ``params``: a persistent full
    buffer for the gathers. Returns the gathered parameters and the new primary gradient shard."""
    if part.secondary is None:
        params = part.allgather_params(primary, out=params)
        part.allgather_params(primary, out=params)
    else:
        secondary = part.refresh_secondary(primary)
        params = part.allgather_secondary(secondary, out=params)
        part.allgather_secondary(secondary, out=params)
    return params, part.reduce_scatter_grads(grad, inplace=inplace)


def run_partition_benchmark(numel: int = 1 << 20, *, schemes: Sequence[str] = ("flat", "hpz", "3level"),
                            iters: int = 20, warmup: int = 3, dtype: str = "float32",
                            comm: Optional[Any] = None) -> list[dict]:
    """One row per scheme the topology supports (3level needs sub-node groups), then the
    Frontier-like prediction rows. Collective over ``comm`` (default: the runtime's)."""
    runtime = get_runtime()
    comm = comm if comm is not None else runtime.comm
    topology = runtime.topology
    link_cost = emulated_link_cost(topology, shift_link_cost(comm))
    gamma = measure_gamma(numel, dtype)
    rows = []
    for scheme in schemes:
        if scheme == "3level" and not topology.groups:
            continue
        with HierarchicalPartition(numel, levels=scheme, comm=comm, dtype=dtype, validate=False) as part:
            rows.append(_measure(part, scheme, comm, topology, iters, warmup, link_cost, gamma))
    flat = next((r for r in rows if r["scheme"] == "flat"), None)
    for row in rows:
        row["ratio_vs_flat"] = flat["median_s"] / row["median_s"] if flat else None
        row["predicted_ratio_vs_flat"] = flat["predicted_s"] / row["predicted_s"] if flat else None
    return rows + frontier_prediction()


def _measure(part: HierarchicalPartition, scheme: str, comm: Any, topology: Topology, iters: int, warmup: int,
             link_cost: Any, gamma: float) -> dict:
    """Time ``iters`` steps (the slowest rank's time of each), check one against numpy, count bytes.

    Steps run as a training loop would: into a persistent parameter buffer, reducing inside the
    gradient buffer (refilled before each step, outside the timing).
    """
    rank, p, numel = comm.rank, comm.size, part.numel
    grad = ((np.arange(numel) + rank) % 7).astype(part.dtype)
    params = (np.arange(numel) % 5).astype(part.dtype)
    primary = params[part.primary].copy()
    work_grad, work_params = grad.copy(), np.empty_like(params)
    with count_link_bytes() as window:
        gathered, shard = zero_step(part, work_grad, primary, work_params, inplace=True)
    expected = sum(((np.arange(numel) + r) % 7) for r in range(p)).astype(part.dtype)
    wrong = comm.allreduce(int(np.count_nonzero(gathered != params))
                           + int(np.count_nonzero(shard != expected[part.primary])))
    recorded = {}
    for part_sent in comm.allgather(window.sent):
        recorded.update(part_sent)

    def refill() -> None:
        work_grad[...] = grad

    def step() -> None:
        zero_step(part, work_grad, primary, work_params, inplace=True)

    call_samples(step, warmup, comm, setup=refill)  # warm-up
    slowest = np.array(call_samples(step, iters, comm, setup=refill))
    predicted_bytes = step_link_bytes(part.plan, part.dtype.itemsize)
    return {"scheme": scheme, "levels": list(part.plan.level_names), "ranks": p, "nodes": len(topology.nodes),
            "numel": numel, "dtype": str(part.dtype), "emulate": topology.emulate, "iters": iters,
            "median_s": statistics.median(slowest), "min_s": float(slowest.min()), "max_s": float(slowest.max()),
            "predicted_s": predict_step(part.plan, part.dtype.itemsize, link_cost, gamma).seconds,
            "inter_node_bytes": inter_node_bytes(recorded, topology),
            "predicted_inter_node_bytes": inter_node_bytes(predicted_bytes, topology), "wrong": wrong}


def emulated_link_cost(topology: Topology, real: LinkCost) -> Any:
    """Link cost between two world ranks: the real path plus, under emulation, the topology's
    α-β when the link crosses nodes (what the transport holds a message back for)."""
    def cost(src: int, dst: int) -> LinkCost:
        if not topology.emulate or topology.node_of(src) == topology.node_of(dst):
            return real
        held = topology.link_cost(src, dst)
        return LinkCost(real.alpha + held.alpha, real.beta + held.beta)
    return cost


def measure_gamma(numel: int, dtype: str, repetitions: int = 7) -> float:
    """Seconds per byte to fold one array into another (numpy add), median of a few runs (every
    rank measures at once)."""
    a, b = np.ones(max(numel, 1), dtype=dtype), np.ones(max(numel, 1), dtype=dtype)
    return statistics.median(call_samples(lambda: np.add(a, b, out=a), repetitions)) / a.nbytes


def frontier_topology(nodes: int = 48) -> Topology:
    """``nodes`` Frontier-like nodes of 8 GCDs, each MI250X's two GCDs a sub-node group."""
    gcd = Device("gpu", None, "MI250X GCD", 64 << 30)
    ranks = tuple(RankInfo(r, f"node{r // 8}", r % 8, gcd, (), "roce") for r in range(8 * nodes))
    return Topology(ranks, {}, source="frontier-like", groups=tuple((r, r + 1) for r in range(0, 8 * nodes, 2)))


def frontier_prediction(numel: int = 20_000_000_000, itemsize: int = 2, nodes: int = 48) -> list[dict]:
    """The model's ZeRO-step time for flat, hpZ and 3-level on 384 GCDs (a 20B model in bf16)."""
    topology = frontier_topology(nodes)

    def cost(src: int, dst: int) -> LinkCost:
        if topology.node_of(src) != topology.node_of(dst):
            return FRONTIER_LINKS["net"]
        return FRONTIER_LINKS["pair" if src // 2 == dst // 2 else "node"]

    seconds = {s: predict_step(make_plan(topology, numel, s), itemsize, cost).seconds
               for s in ("flat", "hpz", "3level")}
    return [{"scheme": f"frontier-{s}", "ranks": topology.size, "nodes": nodes, "numel": numel, "dtype": "bfloat16",
             "predicted_s": t, "predicted_ratio_vs_hpz": seconds["hpz"] / t,
             "paper_tflops_ratio_vs_zeropp": FRONTIER_PAPER_RATIO if s == "3level" else None}
            for s, t in seconds.items()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``partition`` subcommand's options."""
    parser.add_argument("--topology", default="two_nodes_emulated", help="topology file or shipped name")
    parser.add_argument("--numel", type=int, default=1 << 20)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="write the rows here (rank 0)")


def run(args: argparse.Namespace) -> int:
    """Time one ZeRO step (flat vs hpZ vs 3-level); rank 0 prints one JSON row per line."""
    import hpcrt
    runtime = hpcrt.init({"topology_file": args.topology, "log_files": False})
    try:
        rows = run_partition_benchmark(args.numel, iters=args.iters, warmup=args.warmup)
    finally:
        hpcrt.finalize()
    if runtime.rank == 0:
        for row in rows:
            print(json.dumps(row))
        if args.json:
            with open(args.json, "w") as out:
                json.dump(rows, out, indent=1)
    return 0
