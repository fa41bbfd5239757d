"""ULFM (Open MPI ``mpiexec --with-ft ulfm``): revoke a communicator that lost a rank and shrink it
to the survivors, and keep MPI_Finalize from waiting for the dead. Under MPICH these calls do not
exist and a dead rank ends the job anyway."""

from __future__ import annotations

import os
from typing import Any, List, MutableMapping

FT_ENABLED = "OMPI_MCA_mpi_ft_enable"
"""Set to 1 in every rank's environment by ``mpiexec --with-ft ulfm``."""
ASYNC_FINALIZE = "OMPI_MCA_async_mpi_finalize"
"""Open MPI's switch for skipping the job-wide PMIx fence at the end of MPI_Finalize."""


def skip_finalize_fence(environ: MutableMapping[str, str] = os.environ) -> None:
    """Before MPI_Init under ``mpiexec --with-ft ulfm``: let MPI_Finalize skip its last, job-wide
    PMIx fence (``async_mpi_finalize``), unless the user set that parameter.

    Why: once a rank has died, that fence can wait for it forever. The PMIx server inside mpiexec
    stops counting a dead rank among the node's processes only when it sees the rank's socket close
    before it handles mpiexec's deregistration of the rank (on SIGCHLD); when the deregistration
    comes first, the fence waits for the dead rank too and the survivors hang in MPI_Finalize after
    finishing their work (every few runs of the shrink test on a loaded 2-core machine). The fence
    adds nothing there: ULFM's finalize has already synchronized the survivors (an agreement and a
    barrier on COMM_WORLD shrunk to them)."""
    if environ.get(FT_ENABLED, "").lower() in ("1", "true", "yes", "enabled"):
        environ.setdefault(ASYNC_FINALIZE, "1")


def ulfm_available() -> bool:
    """Whether this MPI library offers the ULFM calls (Open MPI 5 built with them)."""
    from mpi4py import MPI
    return "Open MPI" in MPI.Get_library_version() and hasattr(MPI.Comm, "Shrink")


def revoke_and_shrink(comm: Any) -> Any:
    """Revoke ``comm`` (so every rank still blocked on it gets an error) and return its survivors."""
    from mpi4py import MPI
    try:
        comm.Revoke()
    except MPI.Exception:  # already revoked by another rank
        pass
    return comm.Shrink()


def failed_world_ranks(old: Any, shrunk: Any) -> List[int]:
    """World ranks that were in ``old`` and are not in ``shrunk``."""
    from mpi4py import MPI
    world = MPI.COMM_WORLD.Get_group()
    groups = [old.Get_group(), shrunk.Get_group()]
    try:
        before, after = (set(MPI.Group.Translate_ranks(g, list(range(g.Get_size())), world)) for g in groups)
    finally:
        for g in groups + [world]:
            g.Free()
    return sorted(before - after)
