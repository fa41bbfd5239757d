"""What the launcher (srun, mpiexec of MPICH or Open MPI, PMIx) says about this process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

# Variables naming the world size, innermost launcher first (mpiexec inside an allocation
# beats the allocation's Slurm variables), each with the launcher it implies.
_SIZE_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "Open MPI mpirun"),
    ("PMI_SIZE", "a PMI launcher (MPICH mpiexec, srun --mpi=pmi2)"),
    ("SLURM_STEP_NUM_TASKS", "Slurm srun"),
)
_LOCAL_RANK_VARIABLES = (
    "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "PMIX_LOCAL_RANK", "SLURM_LOCALID",
)
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")


class LaunchMismatchError(RuntimeError):
    """The launcher started N tasks but MPI put each in a world of its own (or of another size)."""


@dataclass(frozen=True)
class LaunchInfo:
    """The launcher's view of this process: who started it, how many tasks, which local rank."""

    launcher: Optional[str]
    world_size: Optional[int]
    local_rank: Optional[int]
    rank: Optional[int] = None
    """The process's rank in the world the launcher made, known before MPI is initialized."""


def read_launch_env(environ: Mapping[str, str] | None = None) -> LaunchInfo:
    """Read the world size and local rank the launcher put in the environment, if any."""
    environ = os.environ if environ is None else environ
    local_rank = next((_int_or_none(environ[v]) for v in _LOCAL_RANK_VARIABLES if v in environ), None)
    rank = next((_int_or_none(environ[v]) for v in _RANK_VARIABLES if v in environ), None)
    for size_var, launcher in _SIZE_VARIABLES:
        size = _int_or_none(environ.get(size_var))
        if size is not None:
            return LaunchInfo(launcher, size, local_rank, rank)
    return LaunchInfo(None, None, local_rank, rank)


def _int_or_none(raw: Optional[str]) -> Optional[int]:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def check_world_matches(launch: LaunchInfo, mpi_size: int, mpi_library: str) -> None:
    """Raise :class:`LaunchMismatchError` when MPI's world size is not the launcher's task count.

    The usual cause is a launcher from one MPI with mpi4py built against another, or ``srun``
    with a PMI plugin the MPI library does not speak: every process becomes a singleton.
    """
    if launch.world_size is None or launch.world_size == mpi_size:
        return
    library = mpi_library.splitlines()[0].strip() if mpi_library else "unknown MPI"
    hint = ("each process initialized MPI as a singleton: the launcher and the MPI library mpi4py "
            "uses do not match (for example Open MPI's mpirun with the MPICH wheel, or srun "
            "with a --mpi plugin the library does not support: try srun --mpi=pmi2 or --mpi=pmix)")
    if mpi_size != 1:
        hint = "the launcher's environment and the MPI library disagree about the job's size"
    raise LaunchMismatchError(
        f"{launch.launcher} started {launch.world_size} tasks but MPI ({library}) reports a world "
        f"of {mpi_size} rank(s): {hint}.")
