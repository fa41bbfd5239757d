"""Fault injection for tests and demos: at a given step, delay, slow down, stop, kill or fail one rank."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Callable, List

from hpcrt.monitor.config import FaultSpec

log = logging.getLogger("hpcrt.monitor")


class InjectedFault(RuntimeError):
    """The exception a ``raise`` fault throws."""


class FaultInjector:
    """Applies this rank's faults at each step; ``before_fatal`` runs before a stop or a kill
    (the monitor writes its heartbeat there, so the last step on record is the right one)."""

    def __init__(self, faults: List[FaultSpec], rank: int, before_fatal: Callable[[], None]):
        self._faults = [f for f in faults if f.rank == rank]
        self._rank = rank
        self._before_fatal = before_fatal
        self._step = 0
        """The step running now (counted like ``at_step``'s, from 0)."""

    def __bool__(self) -> bool:
        return bool(self._faults)

    def at_step(self, step: int) -> None:
        """The end of ``step`` (from 0): delays sleep, fatal faults of this step fire."""
        self._step = step + 1
        for fault in self._faults:
            if fault.kind == "delay" and step >= fault.step:
                time.sleep(fault.ms / 1000)
            elif step == fault.step and fault.kind not in ("delay", "slow"):
                log.warning("fault injection: %s on rank %d at step %d", fault.kind, self._rank, step)
                self._fatal(fault.kind, step)

    def stretch(self, seconds: float) -> None:
        """After a compute section that took ``seconds``: a ``slow`` fault sleeps (factor - 1) × that,
        so the section takes factor times as long, whatever the share of work it had."""
        for fault in self._faults:
            if fault.kind == "slow" and self._step >= fault.step:
                time.sleep((fault.factor - 1.0) * max(seconds, 0.0))  # < 0: another thread's collectives

    def _fatal(self, kind: str, step: int) -> None:
        if kind == "raise":
            raise InjectedFault(f"fault injected on rank {self._rank} at step {step}")
        self._before_fatal()
        os.kill(os.getpid(), signal.SIGSTOP if kind == "stop" else signal.SIGKILL)
