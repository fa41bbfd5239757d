"""How a training run ends: done, or stopped early at an agreed step with its checkpoint committed
— then, under Slurm, requeued within the cap once MPI has shut down cleanly — and the record of
why, which the batch script reads."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any, Optional

from hpcrt import request_requeue, write_stop_record

log = logging.getLogger("hpcrt.jobs.train")

STOPPED_EXIT = 124
"""A run stopped early with its checkpoint committed (a signal or the time budget), as timeout(1) exits."""
INTERRUPTED_EXIT = 130
"""A run stopped by Ctrl-C (SIGINT), its checkpoint committed: the shell's code for SIGINT."""
REQUEUE_REASONS = ("SIGUSR1", "SIGUSR2", "time budget")
"""Stops that mean "the time is up, go on later": Slurm's warning signals and the time budget.
SIGTERM (a plain scancel) and SIGINT end the job for good, with the checkpoint committed."""


def exit_code(stopped: Optional[tuple[str, int]]) -> int:
    """0 when the run finished; otherwise the code of its stop, the same on every rank."""
    if stopped is None:
        return 0
    return INTERRUPTED_EXIT if stopped[0] == "SIGINT" else STOPPED_EXIT


def record_end(run_dir: Path, comm: Any, stopped: Optional[tuple[str, int]], last_step: int) -> int:
    """After every rank's checkpoint has committed: rank 0 records how the run ended; every rank
    gets the exit code (collective)."""
    comm.Barrier()
    code = exit_code(stopped)
    if comm.rank == 0:
        reason, step = stopped if stopped is not None else ("done", last_step)
        write_stop_record(run_dir, reason, step, code)
    return code


def requeue_after_shutdown(run_dir: Path, rank: int, stopped: tuple[str, int], max_requeues: int) -> None:
    """Finalize MPI, then have rank 0 ask Slurm to requeue the job and record the answer.

    The requeue kills whatever of the job still runs: a rank killed inside MPI leaves its shared
    memory segments behind under a name the requeued job — same job and step ids — opens again,
    and MPICH's start-up then fails; ranks that finalized first have removed theirs."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a granted requeue signals the job: let every rank finish
    from mpi4py import MPI
    if not MPI.Is_finalized():
        MPI.Finalize()
    if rank != 0:
        return
    reason, step = stopped
    if reason not in REQUEUE_REASONS:
        write_stop_record(run_dir, reason, step, exit_code(stopped), False, f"{reason} ends the job for good")
        log.warning("stopped at step %d (%s) with the checkpoint committed", step, reason)
        return
    # What this rank records must be on disk before the requeue signals the job.
    write_stop_record(run_dir, reason, step, exit_code(stopped), True, "requesting a requeue")
    requeued, why = request_requeue(run_dir, max_requeues)
    write_stop_record(run_dir, reason, step, exit_code(stopped), requeued, why)
    log.warning("stopped at step %d (%s) with the checkpoint committed; %s", step, reason,
                why if requeued else f"no requeue: {why}")
