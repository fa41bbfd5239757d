"""NIC discovery from a sysfs tree built here: Ethernet, IPoIB on an HCA, RoCE, loopback and down links."""

import os
import subprocess
import sys
from pathlib import Path

from hpcrt import NIC
from hpcrt.topology.discovery import best_nic_kind, cpu_device, discover_nics, gpu_count


def make_iface(net: Path, name: str, *, kind_type: str = "1", state: str = "up", speed: str | None = None,
               hca: str | None = None) -> Path:
    iface = net / name
    iface.mkdir(parents=True)
    (iface / "type").write_text(kind_type + "\n")
    (iface / "operstate").write_text(state + "\n")
    if speed is not None:
        (iface / "speed").write_text(speed + "\n")
    if hca:
        (iface / "device" / "infiniband" / hca).mkdir(parents=True)
    return iface


def make_port(ib: Path, hca: str, link_layer: str, rate: str, ndev: str | None = None) -> None:
    port = ib / hca / "ports" / "1"
    port.mkdir(parents=True)
    (port / "link_layer").write_text(link_layer + "\n")
    (port / "rate").write_text(rate + "\n")
    if ndev:
        (port / "gid_attrs" / "ndevs").mkdir(parents=True)
        (port / "gid_attrs" / "ndevs" / "0").write_text(ndev + "\n")


def test_kinds_and_rates(tmp_path):
    net, ib = tmp_path / "net", tmp_path / "infiniband"
    make_iface(net, "lo", speed="10000")
    make_iface(net, "eth0", speed="25000")
    make_iface(net, "eth9", state="down", speed="1000")
    make_iface(net, "veth1", speed="-1")
    make_iface(net, "ib0", kind_type="32", hca="mlx5_0")
    make_iface(net, "ens2", speed="100000")
    make_port(ib, "mlx5_0", "InfiniBand", "200 Gb/sec (4X HDR)")
    make_port(ib, "mlx5_1", "Ethernet", "100 Gb/sec (4X EDR)", ndev="ens2")
    assert discover_nics(net, ib) == (
        NIC("ens2", "roce", 100.0), NIC("eth0", "eth", 25.0), NIC("ib0", "ib", 200.0), NIC("veth1", "eth", None))


def test_best_kind_and_missing_sysfs(tmp_path):
    assert best_nic_kind((NIC("a", "eth"), NIC("b", "roce"))) == "roce"
    assert best_nic_kind((NIC("a", "eth"), NIC("b", "ib"), NIC("c", "roce"))) == "ib"
    assert best_nic_kind(()) == "eth"
    assert discover_nics(tmp_path / "absent", tmp_path / "absent") == ()


def test_this_machine():
    cpu = cpu_device()
    assert cpu.kind == "cpu" and cpu.model
    assert cpu.memory_bytes == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # the kernel's total RAM
    assert gpu_count() == _gpus_in_a_fresh_process()
    for nic in discover_nics():
        assert nic.name != "lo" and nic.kind in ("ib", "roce", "eth")


def test_no_cupy_means_no_gpu():
    probe = "import sys; sys.modules['cupy'] = None\nfrom hpcrt.topology.discovery import gpu_count; print(gpu_count())"
    assert _fresh_python(probe) == "0"


def _gpus_in_a_fresh_process() -> int:
    """CUDA devices as a fresh interpreter sees them through CuPy directly (0 without CuPy or a driver)."""
    return int(_fresh_python("try:\n    import cupy\n    print(cupy.cuda.runtime.getDeviceCount())\n"
                             "except Exception:\n    print(0)"))


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=True).stdout.strip()
