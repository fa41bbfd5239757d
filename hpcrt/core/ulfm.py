"""ULFM (Open MPI ``mpiexec --with-ft ulfm``): revoke a communicator that lost a rank and shrink it
to the survivors, keep MPI_Finalize from waiting for the dead, and abort a job that MPI_Abort no
longer ends. Under MPICH these calls do not exist and a dead rank ends the job anyway."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path
from typing import Any, List, Mapping, MutableMapping, Optional

FT_ENABLED = "OMPI_MCA_mpi_ft_enable"
"""Set to 1 in every rank's environment by ``mpiexec --with-ft ulfm``."""
ASYNC_FINALIZE = "OMPI_MCA_async_mpi_finalize"
"""Open MPI's switch for skipping the job-wide PMIx fence at the end of MPI_Finalize."""
PMIX_JOB_CTRL_SIGNAL = b"pmix.jctrl.sig"
"""PMIx job-control directive: the launcher sends a signal to every process of the target's job."""
PMIX_INT = 6
"""PMIx data type code of an int."""
PMIX_RANK_WILDCARD = 0xFFFFFFFE
"""The PMIx rank that stands for every process of a job."""


def ft_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process was started by ``mpiexec --with-ft ulfm``."""
    return environ.get(FT_ENABLED, "").lower() in ("1", "true", "yes", "enabled")


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
    if ft_enabled(environ):
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


class _PmixProc(ctypes.Structure):
    """PMIx's ``pmix_proc_t``: a namespace (the job) and a rank."""

    _fields_ = [("nspace", ctypes.c_char * 256), ("rank", ctypes.c_uint32)]


class _PmixData(ctypes.Union):
    """The data union of PMIx's ``pmix_value_t``, padded here beyond its real size."""

    _fields_ = [("integer", ctypes.c_int), ("padding", ctypes.c_uint64 * 4)]


class _PmixValue(ctypes.Structure):
    """PMIx's ``pmix_value_t``: a type code and the data."""

    _fields_ = [("type", ctypes.c_uint16), ("data", _PmixData)]


class _PmixInfo(ctypes.Structure):
    """PMIx's ``pmix_info_t``: a key, directive flags and a value."""

    _fields_ = [("key", ctypes.c_char * 512), ("flags", ctypes.c_uint32), ("value", _PmixValue)]


def abort_world(errorcode: int) -> None:
    """End the whole job with ``errorcode``: MPI_Abort on COMM_WORLD, or :func:`abort_job` under
    ULFM, where MPI_Abort would end this rank only."""
    if ft_enabled():
        abort_job(errorcode)
    from mpi4py import MPI
    MPI.COMM_WORLD.Abort(errorcode)


def abort_job(errorcode: int) -> None:
    """MPI_Abort for jobs under ULFM, where MPI_Abort ends only the calling process: have the
    launcher send SIGTERM to every other process of the job, then exit with ``errorcode``. Callable
    from any thread (the monitor's watchdog aborts from its own).

    Why: under ``--with-ft ulfm`` mpiexec takes MPI_Abort's PMIx abort request for one recoverable
    process failure, and ULFM does not report that kind (nor a plain non-zero exit) to the other
    ranks, which would wait forever in their collectives. A SIGTERM (by default) ends them. Not a
    launcher kill: mpiexec ignores the exit code of a process it killed, so ranks failing together
    would kill each other and the job would end with 0. This process ignores the SIGTERM and exits
    with ``errorcode``, which becomes mpiexec's. If the launcher does not take the request, this
    process dies of SIGKILL: ULFM reports that to the others."""
    _ignore_sigterm()
    if _signal_job(signal.SIGTERM):
        _signal_job(signal.SIGCONT)  # a stopped rank holds the SIGTERM pending until it runs again
        os._exit(errorcode)
    os.kill(os.getpid(), signal.SIGKILL)


def _ignore_sigterm() -> None:
    """SIG_IGN for SIGTERM, set in C: Python's ``signal.signal`` works only in the main thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal(ctypes.c_int(signal.SIGTERM), ctypes.c_void_p(1))  # 1: SIG_IGN


def _signal_job(signum: int) -> bool:
    """Ask mpiexec's PMIx server to send ``signum`` to every process of this job (PMIx_Job_control);
    whether it accepted. The PMIx library is the one Open MPI already loaded and initialized."""
    pmix, nspace = _loaded_pmix(), os.environ.get("PMIX_NAMESPACE")
    if pmix is None or nspace is None or not hasattr(pmix, "PMIx_Job_control"):
        return False
    job = _PmixProc(nspace.encode(), PMIX_RANK_WILDCARD)
    directive = _PmixInfo(PMIX_JOB_CTRL_SIGNAL, 0, _PmixValue(PMIX_INT, _PmixData(integer=signum)))
    results, nresults = ctypes.c_void_p(), ctypes.c_size_t()
    pmix.PMIx_Job_control.restype = ctypes.c_int
    status = pmix.PMIx_Job_control(ctypes.byref(job), ctypes.c_size_t(1), ctypes.byref(directive),
                                   ctypes.c_size_t(1), ctypes.byref(results), ctypes.byref(nresults))
    return status == 0


def _loaded_pmix() -> Optional[ctypes.CDLL]:
    """The PMIx library mapped into this process (Linux), or None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps.splitlines() if "/libpmix.so" in line}
    return ctypes.CDLL(sorted(paths)[0]) if paths else None
