"""The abort hook: one rank dying of an uncaught exception or a non-zero exit takes the whole job
down at once, with that rank's number and traceback, instead of leaving the others hanging."""

from __future__ import annotations

import sys
import time
import traceback
from types import TracebackType
from typing import Any, Callable, Optional


FORWARD_GRACE_S = 0.5
"""Pause between writing the report and aborting: MPI_Abort makes the launcher kill every process,
and output still in its forwarding path (the rank's pipe to mpiexec or srun) would be lost."""


class AbortHook:
    """Replaces ``sys.excepthook`` and ``sys.exit`` (Hydra turns exceptions into ``sys.exit(1)``)."""

    def __init__(self, abort: Callable[[int], None], who: str):
        self._abort = abort
        self._who = who
        self._previous_excepthook = sys.excepthook
        self._previous_exit = sys.exit
        self.installed = False

    def install(self) -> None:
        sys.excepthook = self._excepthook
        sys.exit = self._exit
        self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            sys.excepthook = self._previous_excepthook
            sys.exit = self._previous_exit
            self.installed = False

    def _report(self, headline: str, exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        text = f"{headline}; aborting the whole job\n"
        if exc is not None:
            text += "".join(traceback.format_exception(type(exc), exc, tb))
        sys.stdout.flush()
        sys.stderr.write("".join(f"hpcrt [{self._who}] {line}\n" for line in text.splitlines()))
        sys.stderr.flush()
        time.sleep(FORWARD_GRACE_S)

    def _excepthook(self, etype: type, value: BaseException, tb: Optional[TracebackType]) -> None:
        self._report(f"died of an uncaught {etype.__name__}", value, tb)
        self._abort(1)

    def _exit(self, status: Any = None) -> None:
        if status not in (None, 0):
            _, current, tb = sys.exc_info()
            self._report(f"exited with status {status!r}", current, tb)
            self._abort(status if isinstance(status, int) and 0 < status < 256 else 1)
        self._previous_exit(status)
