"""How a rank's failure ends the job. A user mistake (a bad config key, topology file or launcher)
is said once, by rank 0, in one line, and every rank exits with status 2; a crash — one rank dying
of an uncaught exception or a non-zero exit — takes the whole job down at once through the abort
hook, with that rank's number and traceback, instead of leaving the others hanging."""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, NoReturn, Optional

from hpcrt.core.config import ConfigError
from hpcrt.core.launcher import LaunchMismatchError, read_launch_env
from hpcrt.core.logs import record_traceback
from hpcrt.topology.yaml_file import TopologyFileError

USER_MISTAKE_EXIT = 2
"""Exit status of every rank of a job stopped by a user mistake (as argparse exits on bad arguments)."""
USER_MISTAKES: tuple[type[BaseException], ...] = (ConfigError, TopologyFileError, LaunchMismatchError)
"""The errors that name a setting, a file or a launcher the user got wrong: said in one line."""
AGREE_TIMEOUT_S = 10.0
"""How long a rank that found a user mistake waits for every other rank to find it too; past it,
the mistake is this rank's alone and the job is aborted (the others may be waiting on it)."""
FORWARD_GRACE_S = 0.5
"""Pause between writing the report and aborting: MPI_Abort makes the launcher kill every process,
and output still in its forwarding path (the rank's pipe to mpiexec or srun) would be lost."""

_AGREEMENT: list = []


def prepare_agreement(comm: Any) -> None:
    """Keep a private duplicate of ``comm`` (collective) on which ranks that found a user mistake
    agree that all did; called once, before anything that can fail."""
    if not _AGREEMENT:
        _AGREEMENT.append(comm.Dup())


def _everyone_failed() -> bool:
    """Whether every rank reached a user mistake within :data:`AGREE_TIMEOUT_S` (True without a
    prepared communicator: the caller's mistake is then one every rank finds alike)."""
    if not _AGREEMENT:
        return True
    request = _AGREEMENT[0].Ibarrier()
    deadline = time.monotonic() + AGREE_TIMEOUT_S
    while not request.Test():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def speaking_rank() -> tuple[int, int]:
    """This process's rank and the job's size: MPI's, or the launcher's when MPI made every task a
    singleton (a launcher mismatch), so that one task of the job speaks, not each."""
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    launch = read_launch_env()
    if world.size == 1 and launch.rank is not None and launch.world_size:
        return launch.rank, launch.world_size
    return world.rank, world.size


def say_once_and_exit(who: str, error: BaseException, log_dir: Optional[Path] = None,
                      debug: bool = False) -> NoReturn:
    """End the job on a user mistake: its traceback goes to ``log_dir``'s ``rank-N.log`` (and to the
    console with ``debug``); when every rank found it, rank 0 says it in one line and every rank exits
    with status 2 (SystemExit, not sys.exit, which the abort hook takes for a crash); when only this
    rank did, it says it with its rank and aborts the job with status 2."""
    import hpcrt
    rank, size = speaking_rank()
    if hpcrt.is_initialized():
        runtime = hpcrt.get_runtime()
        debug = debug or runtime.config.log_level.upper() == "DEBUG"
        if log_dir is None and runtime.config.log_files and runtime.run_dir is not None:
            log_dir = runtime.run_dir / "logs"
    record_traceback(log_dir, rank, error)
    everyone = _everyone_failed()
    if rank == 0 or not everyone:
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__)) if debug else ""
        where = "" if everyone else f" [rank {rank} of {size}]"
        sys.stdout.flush()
        print(f"{trace}{who}{where}: {error}", file=sys.stderr, flush=True)
    if not everyone:
        time.sleep(FORWARD_GRACE_S)
        from hpcrt.core.ulfm import abort_world
        abort_world(USER_MISTAKE_EXIT)
    if hpcrt.is_initialized():
        hpcrt.finalize()
    raise SystemExit(USER_MISTAKE_EXIT)


def crash_exit() -> NoReturn:
    """End this rank inside an ``except`` block after an error the job cannot go on from, so that no
    other rank is left waiting: through the abort hook when the runtime installed one (it reports the
    traceback and aborts the job), else with the traceback printed and the whole job aborted."""
    if isinstance(getattr(sys.exit, "__self__", None), AbortHook):
        sys.exit(1)
    sys.stderr.write(traceback.format_exc())
    sys.stderr.flush()
    time.sleep(FORWARD_GRACE_S)  # the launcher forwards it before the abort ends this process
    from hpcrt.core.ulfm import abort_world
    abort_world(1)
    raise SystemExit(1)  # abort_world returned: MPI is not there any more


class AbortHook:
    """Replaces ``sys.excepthook`` and ``sys.exit`` (Hydra turns exceptions into ``sys.exit(1)``);
    its report also goes to ``log_file`` once the runtime has set one."""

    def __init__(self, abort: Callable[[int], None], who: str):
        self._abort = abort
        self._who = who
        self._previous_excepthook = sys.excepthook
        self._previous_exit = sys.exit
        self.installed = False
        self.log_file: Optional[Path] = None

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
        report = "".join(f"hpcrt [{self._who}] {line}\n" for line in text.splitlines())
        sys.stdout.flush()
        sys.stderr.write(report)
        sys.stderr.flush()
        if self.log_file is not None:
            try:
                with open(self.log_file, "a") as log:
                    log.write(report)
            except OSError:
                pass  # the console has the report; a full disk must not keep the job from aborting
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
