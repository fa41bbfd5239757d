"""How a training run ends: done, or stopped early at an agreed step with its checkpoint committed
— then, under Slurm, requeued within the cap — and the record of why, which the batch script reads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from hpcrt import request_requeue, write_stop_record

log = logging.getLogger("hpcrt.jobs.train")

STOPPED_EXIT = 124
"""A run stopped early with its checkpoint committed (a signal or the time budget), as timeout(1) exits."""
INTERRUPTED_EXIT = 130
"""A run stopped by Ctrl-C (SIGINT), its checkpoint committed: the shell's code for SIGINT."""


def exit_code(stopped: Optional[tuple[str, int]]) -> int:
    """0 when the run finished; otherwise the code of its stop, the same on every rank."""
    if stopped is None:
        return 0
    return INTERRUPTED_EXIT if stopped[0] == "SIGINT" else STOPPED_EXIT


def end_run(run_dir: Path, comm: Any, stopped: Optional[tuple[str, int]], last_step: int, max_requeues: int) -> int:
    """After every rank's checkpoint has committed: rank 0 records the end and, for a stop, asks
    Slurm to requeue the job; every rank gets the exit code (collective)."""
    comm.Barrier()  # nobody is still writing when the requeue kills the job
    code = exit_code(stopped)
    if comm.rank != 0:
        return code
    if stopped is None:
        write_stop_record(run_dir, "done", last_step, code)
        return code
    reason, step = stopped
    write_stop_record(run_dir, reason, step, code, why="requesting a requeue")
    requeued, why = request_requeue(run_dir, max_requeues)
    write_stop_record(run_dir, reason, step, code, requeued, why)
    log.warning("stopped at step %d (%s) with the checkpoint committed; %s", step, reason,
                why if requeued else f"no requeue: {why}")
    return code
