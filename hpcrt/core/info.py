"""``hpcrt info``: what a user needs to trust a job — the MPI library, thread level,
CUDA-awareness and a table of ranks × node × device × NICs."""

from __future__ import annotations

from typing import Any

from hpcrt.core.runtime import Runtime
from hpcrt.topology.table import Device


def collect_info(runtime: Runtime) -> dict:
    """A JSON-able description of the job as every rank sees it (identical on all ranks)."""
    import mpi4py
    from mpi4py import MPI
    from hpcrt import __version__
    topo = runtime.topology
    return {
        "hpcrt": __version__,
        "mpi4py": mpi4py.__version__,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
        "mpi_standard": "{}.{}".format(*MPI.Get_version()),
        "thread_level": runtime.thread_level_name,
        "thread_level_requested": f"MPI_THREAD_{runtime.config.thread_level.upper()}",
        "launcher": runtime.launch.launcher or "none (singleton)",
        "cuda_aware": runtime.cuda_aware.enabled,
        "cuda_aware_reason": runtime.cuda_aware.reason,
        "cuda_aware_probed": runtime.cuda_aware.probed,
        "cuda_aware_confirmed": runtime.cuda_aware.confirmed,
        "topology_source": topo.source,
        "link_emulation": topo.emulate,
        "nodes": topo.nodes,
        "link_costs": {name: {"alpha_us": cost.alpha * 1e6, "bandwidth_gbytes_s": 1e-9 / cost.beta}
                       for name, cost in topo.link_costs.items() if cost.beta > 0},
        "ranks": [r.to_dict() for r in topo.ranks],
    }


def format_info(info: dict) -> str:
    """The human-readable report of :func:`collect_info`."""
    nodes = info["nodes"]
    lines = [
        f"hpcrt {info['hpcrt']} (mpi4py {info['mpi4py']})",
        f"MPI library      : {info['mpi_library']} (MPI {info['mpi_standard']})",
        f"launcher         : {info['launcher']}",
        f"thread level     : {info['thread_level']} (requested {info['thread_level_requested']})",
        f"CUDA-aware MPI   : {'yes' if info['cuda_aware'] else 'no'} — {info['cuda_aware_reason']}",
        f"  probed         : {_answer(info['cuda_aware_probed'], 'yes', 'no', 'not asked')}",
        f"  confirmed      : {_answer(info['cuda_aware_confirmed'], 'yes', 'no', 'not tested')}",
        f"topology         : {info['topology_source']}"
        + (" (link emulation on)" if info["link_emulation"] else ""),
        f"ranks            : {len(info['ranks'])} on {len(nodes)} node(s): {', '.join(nodes)}",
        "",
    ]
    header = ("rank", "node", "local", "host", "device", "NIC class", "NICs")
    rows = [header] + [_rank_row(r) for r in info["ranks"]]
    lines += _table(rows)
    lines += ["", "link costs (alpha, bandwidth):"]
    lines += [f"  {name:<6} {c['alpha_us']:8.2f} us {c['bandwidth_gbytes_s']:9.2f} GB/s"
              for name, c in info["link_costs"].items()]
    return "\n".join(lines)


def _answer(value: Any, yes: str, no: str, unknown: str) -> str:
    return unknown if value is None else yes if value else no


def _rank_row(rank: dict) -> tuple:
    device = Device(**rank["device"])
    nics = ", ".join(_nic_text(n) for n in rank["nics"]) or "-"
    return (str(rank["rank"]), rank["node"], str(rank["local_rank"]), rank["host"], _device_text(device),
            rank["nic_class"], nics)


def _device_text(device: Device) -> str:
    memory = f", {device.memory_bytes / 2**30:.0f} GiB" if device.memory_bytes else ""
    index = f" {device.index}" if device.index is not None else ""
    return f"{device.kind}{index} ({device.model}{memory})"


def _nic_text(nic: Any) -> str:
    rate = f" {nic['rate_gbps']:g} Gb/s" if nic.get("rate_gbps") else ""
    return f"{nic['name']} {nic['kind']}{rate}"


def _table(rows: list) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
