"""Ending a stopped job under Slurm: requeue it (this array task only, within a cap, never once
it is done) and record why it stopped in the run directory, where the batch script reads it —
``srun`` may replace the ranks' exit code with its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Mapping, Optional

from hpcrt.core.files import write_json

STOP_RECORD = "stop.json"
"""``{"reason", "step", "requeued", "why", "exit_code", "restart_count", "time"}``, replaced atomically."""
DONE_MARKER = "DONE"
"""Written when a job finished all its work: a requeue after it would redo nothing, so none is made."""


def slurm_job_id(environ: Mapping[str, str]) -> Optional[str]:
    """The id ``scontrol requeue`` takes for this job: ``ARRAYJOB_TASK`` for an array task (so only
    this task is requeued, not the whole array), else the job id; None outside Slurm."""
    if environ.get("SLURM_ARRAY_JOB_ID") and environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return environ.get("SLURM_JOB_ID") or None


def restart_count(environ: Mapping[str, str]) -> int:
    """How many times Slurm has restarted this job (``SLURM_RESTART_COUNT``, 0 when unset)."""
    raw = environ.get("SLURM_RESTART_COUNT", "0")
    return int(raw) if raw.isdigit() else 0


def request_requeue(run_dir: Path, max_requeues: int, environ: Optional[Mapping[str, str]] = None) -> tuple[bool, str]:
    """Ask Slurm to requeue this job; (whether it was asked, why or why not). Call it on one rank,
    after the checkpoint has committed on every rank: the requeue kills the running job."""
    environ = os.environ if environ is None else environ
    job = slurm_job_id(environ)
    if job is None:
        return False, "not a Slurm job"
    if (run_dir / DONE_MARKER).exists():
        return False, f"the run is done ({run_dir / DONE_MARKER} exists)"
    count = restart_count(environ)
    if count >= max_requeues:
        return False, f"the requeue cap is reached (SLURM_RESTART_COUNT {count} >= slurm.max_requeues {max_requeues})"
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return False, "scontrol is not on PATH: requeue it yourself (scontrol requeue " + job + ")"
    try:
        done = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"scontrol requeue {job} failed: {error}"
    if done.returncode != 0:
        return False, f"scontrol requeue {job} failed: {(done.stderr or done.stdout).strip()}"
    return True, f"requeued as job {job} (restart {count + 1} of at most {max_requeues})"


def write_stop_record(run_dir: Path, reason: str, step: int, exit_code: int, requeued: bool = False,
                      why: str = "") -> None:
    """Record in ``run_dir`` why and where the job stopped (atomically: a reader never sees half)."""
    record = {"reason": reason, "step": step, "requeued": requeued, "why": why, "exit_code": exit_code,
              "restart_count": restart_count(os.environ), "time": time.time()}
    write_json(run_dir / STOP_RECORD, record)
    if reason == "done":
        (run_dir / DONE_MARKER).touch()


def clear_done(run_dir: Path) -> None:
    """Forget that the run was done: it was given more steps, and may stop and requeue again."""
    (run_dir / DONE_MARKER).unlink(missing_ok=True)
