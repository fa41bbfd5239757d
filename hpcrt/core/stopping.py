"""Graceful stop for any job: signal handlers that only set a flag, a time budget, and one small
allreduce at a step boundary so that every rank decides to stop at the same step (a rank that
checkpoints from a signal handler, or alone, would hang the others in a collective)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from hpcrt.core import trace_hook as trace
DEFAULT_SIGNALS = ("SIGUSR2", "SIGUSR1", "SIGTERM", "SIGINT")
"""Slurm's ``--signal`` warning (USR1/USR2), the launcher's TERM, and Ctrl-C on an interactive run."""
DEADLINE = 1000
"""The code of a spent time budget in the MAX-allreduce; above any signal number."""


def slurm_deadline(environ: Mapping[str, str], grace_s: float) -> Optional[float]:
    """The wall-clock time to stop by under Slurm: ``SLURM_JOB_END_TIME`` minus ``grace_s``, or None."""
    end = environ.get("SLURM_JOB_END_TIME", "")
    return float(end) - grace_s if end.isdigit() and int(end) > 0 else None


class GracefulStop:
    """Installs flag-only handlers for ``signals`` (names such as ``"SIGUSR2"``) and keeps a deadline
    (epoch seconds, or None). :meth:`requested` is collective: call it at every step boundary on
    every rank. After the first SIGINT, a second one interrupts at once (the default handler)."""

    def __init__(self, signals: Sequence[str] = DEFAULT_SIGNALS, deadline: Optional[float] = None):
        self.deadline = deadline
        self.received: Optional[int] = None
        self._previous: dict = {}
        for name in signals:
            number = _signal_number(name)
            self._previous[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is None:
            self.received = number
        if number == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def requested(self, comm: Any) -> Optional[str]:
        """Why the job stops at this step — a signal's name or ``"time budget"`` — the same on every
        rank of ``comm``, or None (one allreduce of one integer)."""
        local = self.received or 0
        if not local and self.deadline is not None and time.time() >= self.deadline:
            local = DEADLINE
        agreed = np.zeros(1, dtype=np.int64)
        token = trace.trace_collective("stop_check", comm, agreed.nbytes)  # the monitor counts the wait
        try:
            comm.Allreduce(np.array([local], dtype=np.int64), agreed, op=_max())
        finally:
            trace.trace_done(token)
        code = int(agreed[0])
        if code == 0:
            return None
        return "time budget" if code == DEADLINE else signal.Signals(code).name

    def close(self) -> None:
        """Put back the handlers that were there before."""
        for number, previous in self._previous.items():
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}


def signal_name(name: str) -> str:
    """``"usr2"``, ``"SIGUSR2"`` → ``"SIGUSR2"``; ValueError for a name that is no signal."""
    full = "SIG" + str(name).upper().removeprefix("SIG")
    if full not in signal.Signals.__members__:
        raise ValueError(f"unknown signal {name!r}; expected a name such as SIGUSR2 or SIGTERM")
    return full


def _signal_number(name: str) -> int:
    return int(signal.Signals[signal_name(name)])


def _max() -> Any:
    from mpi4py import MPI
    return MPI.MAX


def environment_deadline(grace_s: float, max_minutes: float = 0.0, started: Optional[float] = None) -> Optional[float]:
    """The earlier of Slurm's end time minus ``grace_s`` and ``max_minutes`` after ``started`` (0: no budget)."""
    candidates = [slurm_deadline(os.environ, grace_s)]
    if max_minutes > 0:
        candidates.append((started if started is not None else time.time()) + max_minutes * 60)
    found = [c for c in candidates if c is not None]
    return min(found) if found else None
