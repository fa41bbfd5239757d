"""One run directory per job, agreed by all ranks: rank 0 decides and creates it, the others
receive its path — never one timestamp per rank."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional

DEFAULT_ROOT = "hpcrt-runs"


def default_run_dir(environ: Mapping[str, str], now: Optional[float] = None) -> Path:
    """``hpcrt-runs/<Slurm job id>`` under Slurm, else ``hpcrt-runs/<date-time>``."""
    job = environ.get("SLURM_JOB_ID")
    if job:
        step = environ.get("SLURM_STEP_ID")
        return Path(DEFAULT_ROOT) / (f"slurm-{job}" + (f".{step}" if step else ""))
    return Path(DEFAULT_ROOT) / time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def agree_run_dir(comm: Any, configured: Optional[str], environ: Mapping[str, str] | None = None) -> Path:
    """Rank 0 picks and creates the directory; every rank returns the same absolute path.

    A failure on rank 0 (unwritable parent, say) is raised on every rank.
    """
    environ = os.environ if environ is None else environ
    answer: Any = None
    if comm.rank == 0:
        path = Path(configured) if configured else default_run_dir(environ)
        try:
            path.mkdir(parents=True, exist_ok=True)
            answer = str(path.resolve())
        except OSError as exc:
            answer = OSError(exc.errno, f"hpcrt: cannot create the run directory {path}: {exc.strerror}")
    answer = comm.bcast(answer, root=0)
    if isinstance(answer, OSError):
        raise answer
    return Path(answer)
