"""Discovery of what this process runs on: NICs from sysfs, the CPU, and GPUs through CuPy."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from hpcrt.topology.table import NIC, NIC_KINDS, Device

SYS_NET = Path("/sys/class/net")
SYS_INFINIBAND = Path("/sys/class/infiniband")
ARPHRD_INFINIBAND = "32"


def discover_nics(sys_net: Path = SYS_NET, sys_ib: Path = SYS_INFINIBAND) -> tuple:
    """Every interface that is up, but loopback, with its kind (ib/roce/eth) and rate in Gb/s."""
    if not sys_net.is_dir():
        return ()
    roce_netdevs = _roce_netdevs(sys_ib)
    nics = []
    for iface in sorted(sys_net.iterdir()):
        if iface.name == "lo" or _read(iface / "operstate") == "down":
            continue
        if _read(iface / "type") == ARPHRD_INFINIBAND:
            kind = "ib"
        elif iface.name in roce_netdevs:
            kind = "roce"
        else:
            kind = "eth"
        nics.append(NIC(iface.name, kind, roce_netdevs.get(iface.name) or _ib_rate(iface, sys_ib)
                        or _eth_rate(iface)))
    return tuple(nics)


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _eth_rate(iface: Path) -> Optional[float]:
    speed = _read(iface / "speed")  # Mb/s; -1 or unreadable for virtual interfaces
    try:
        mbps = int(speed) if speed is not None else -1
    except ValueError:
        return None
    return mbps / 1000 if mbps > 0 else None


def _ib_port_rate(port: Path) -> Optional[float]:
    match = re.match(r"([\d.]+)\s*Gb/sec", _read(port / "rate") or "")
    return float(match.group(1)) if match else None


def _ib_rate(iface: Path, sys_ib: Path) -> Optional[float]:
    """Rate of the IB HCA port behind an IPoIB interface, if sysfs links them."""
    for hca in _hcas_of(iface, sys_ib):
        for port in sorted((hca / "ports").glob("*")):
            rate = _ib_port_rate(port)
            if rate:
                return rate
    return None


def _hcas_of(iface: Path, sys_ib: Path) -> list[Path]:
    ib_dir = iface / "device" / "infiniband"
    if ib_dir.is_dir():
        return [sys_ib / name for name in sorted(os.listdir(ib_dir))]
    return []


def _roce_netdevs(sys_ib: Path) -> dict:
    """Ethernet netdevs that carry RDMA (RoCE), mapped to their port rate."""
    found: dict = {}
    if not sys_ib.is_dir():
        return found
    for hca in sorted(sys_ib.iterdir()):
        for port in sorted((hca / "ports").glob("*")):
            if _read(port / "link_layer") != "Ethernet":
                continue
            for ndev in sorted((port / "gid_attrs" / "ndevs").glob("*")):
                name = _read(ndev)
                if name:
                    found.setdefault(name, _ib_port_rate(port))
    return found


def best_nic_kind(nics: tuple) -> str:
    """The fastest kind among a node's NICs (ib before roce before eth)."""
    kinds = {n.kind for n in nics}
    return next((k for k in NIC_KINDS if k in kinds), "eth")


def cpu_device() -> Device:
    """The host CPU: model name from /proc/cpuinfo and total memory from /proc/meminfo."""
    model = ""
    cpuinfo = _read(Path("/proc/cpuinfo")) or ""
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    if match:
        model = match.group(1).strip()
    memory = None
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", _read(Path("/proc/meminfo")) or "", re.MULTILINE)
    if match:
        memory = int(match.group(1)) * 1024
    return Device("cpu", None, model or os.uname().machine, memory)


def gpu_count() -> int:
    """How many CUDA devices CuPy sees; 0 without CuPy or without a driver."""
    try:
        import cupy
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no cupy, no driver, no device: all mean CPU only
        return 0


def gpu_device(index: int) -> Device:
    """A CUDA device's model and memory, read through CuPy."""
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"]
    return Device("gpu", index, name.decode() if isinstance(name, bytes) else str(name),
                  int(props["totalGlobalMem"]))
