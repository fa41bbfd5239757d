"""One run directory per job, agreed by all ranks: rank 0 decides and creates it, the others
receive its path — never one timestamp per rank, and never a directory another job already has."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from hpcrt.core.requeue import slurm_job_id

DEFAULT_ROOT = "hpcrt-runs"
MAX_SUFFIX = 1000
"""Jobs started in the same second beyond this many are refused rather than searched further."""


def default_run_name(environ: Mapping[str, str], now: Optional[float] = None) -> str:
    """``slurm-<job id>[.<step>]`` (``slurm-<array job id>_<task id>`` for an array task) under
    Slurm, stable across requeues; else ``<date-time>``."""
    job = slurm_job_id(environ)
    if job:
        step = environ.get("SLURM_STEP_ID")
        return f"slurm-{job}" + (f".{step}" if step else "")
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def create_run_dir(root: Path, environ: Mapping[str, str], now: Optional[float] = None) -> Path:
    """Create ``root/<default name>`` and return it. Under Slurm the job's directory is reused (a
    requeued job finds its own again); otherwise it is created exclusively, with ``-1``, ``-2``, …
    appended when another job took the name first (two jobs started in the same second)."""
    name = default_run_name(environ, now)
    root.mkdir(parents=True, exist_ok=True)
    if name.startswith("slurm-"):
        (root / name).mkdir(exist_ok=True)
        return root / name
    for suffix in range(MAX_SUFFIX):
        path = root / (name if suffix == 0 else f"{name}-{suffix}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{root / name} and {MAX_SUFFIX - 1} suffixed variants already exist")


def agree_run_dir(comm: Any, configured: Optional[str], environ: Mapping[str, str] | None = None,
                  root: str | Path = DEFAULT_ROOT) -> Path:
    """Rank 0 creates ``configured`` (reused when it exists: the user chose it) or a new directory
    under ``root`` (see :func:`create_run_dir`); every rank returns the same absolute path.

    A failure on rank 0 (unwritable parent, say) is raised on every rank.
    """
    environ = os.environ if environ is None else environ
    answer: Any = None
    if comm.rank == 0:
        path = Path(configured) if configured else Path(root)
        try:
            if configured:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path = create_run_dir(path, environ)
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
            answer = str(path.resolve())
        except OSError as exc:
            answer = OSError(exc.errno, f"hpcrt: cannot create the run directory {path}: "
                             f"{exc.strerror or exc}")
    answer = comm.bcast(answer, root=0)
    if isinstance(answer, OSError):
        raise answer
    return Path(answer)
