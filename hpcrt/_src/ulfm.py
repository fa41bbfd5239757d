"""ULFM (Open MPI ``mpiexec --with-ft ulfm``): revoke a communicator that lost a rank and shrink it
to the survivors. Under MPICH these calls do not exist and a dead rank ends the job anyway."""

from __future__ import annotations

from typing import Any, List


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
