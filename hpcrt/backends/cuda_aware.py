"""Whether GPU buffers go to MPI directly: explicit setting > probe hint > host staging."""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class CudaAwareDecision:
    """The decision and why, as ``hpcrt info`` prints it."""

    enabled: bool
    reason: str


def loaded_mpi_library() -> Optional[str]:
    """Path of the MPI shared library this process has loaded (read from /proc/self/maps)."""
    try:
        maps = open("/proc/self/maps").read()
    except OSError:
        return None
    paths = sorted(set(re.findall(r"(/\S*/lib(?:mpi|mpich|mpi_mpifh)\S*\.so[\d.]*)", maps)))
    return paths[0] if paths else None


def probe_cuda_support(library: Optional[str] = None) -> tuple[Optional[bool], str]:
    """Ask the MPI library ``MPIX_Query_cuda_support()`` through ctypes.

    Returns (answer, how it was obtained); the answer is None when the library has no such symbol.
    It is a hint only: some libraries answer at compile time, not for the running transport.
    """
    library = library or loaded_mpi_library()
    if library is None:
        return None, "no MPI shared library found in this process"
    try:
        lib = ctypes.CDLL(library)
        query = lib.MPIX_Query_cuda_support
    except (OSError, AttributeError):
        return None, f"{library} has no MPIX_Query_cuda_support"
    query.restype = ctypes.c_int
    answer = bool(query())
    return answer, f"MPIX_Query_cuda_support() of {library} returned {int(answer)}"


def decide_cuda_aware(setting: str, env_setting: Optional[str] = None,
                      probe: Optional[tuple[Optional[bool], str]] = None) -> CudaAwareDecision:
    """Decide from ``setting`` (yes/no/auto, environment already merged) and the probe's hint.

    ``env_setting`` names where an explicit setting came from, for the reason text.
    """
    source = env_setting or "config"
    if setting == "yes":
        return CudaAwareDecision(True, f"set to yes by {source}")
    if setting == "no":
        return CudaAwareDecision(False, f"set to no by {source}; GPU buffers are staged through pinned host memory")
    answer, how = probe if probe is not None else probe_cuda_support()
    if answer:
        return CudaAwareDecision(True, f"probe: {how}")
    return CudaAwareDecision(False, f"probe: {how}; GPU buffers are staged through pinned host memory")
