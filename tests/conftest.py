"""Test-suite settings. MPI tests carry ``@pytest.mark.mpi(ranks=[...], timeout=...)``:
pytest-isolate-mpi runs each in its own ``mpiexec`` and reports every rank's failure; here such a
test also fails when its mpiexec exits non-zero or outlives the timeout after every rank passed.
Tests that need a tool CI installs call :func:`require_tool`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TOPOLOGY = REPO / "hpcrt" / "topologies" / "two_nodes_mixed_nic.yaml"

# No test may hang the suite: an MPI job that outlives this is killed by mpiexec itself,
# a backstop behind each test's own timeout.
os.environ.setdefault("MPIEXEC_TIMEOUT", "300")
# Every rank's runtime logs go to the test's temporary directory, never into the checkout.
os.environ.setdefault("HPCRT_LOG_FILES", "0")


def pytest_configure(config: pytest.Config) -> None:
    # pytest-isolate-mpi 0.4 forwards "-q" to each rank's pytest as a bare "-"; ranks keep
    # the default verbosity instead.
    if config.option.verbose < 0:
        config.option.verbose = 0


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Have every mpi-marked test also judged by how its mpiexec ended (see :class:`MpiexecEnding`)."""
    isolate_mpi = sys.modules.get("pytest_isolate_mpi._plugin")  # absent under -p no:isolate-mpi
    if isolate_mpi is None:
        return
    for plugin in session.config.pluginmanager.get_plugins():
        if isinstance(plugin, isolate_mpi.MPIPlugin) and not isinstance(isolate_mpi.subprocess, MpiexecEnding):
            ending = MpiexecEnding()
            isolate_mpi.subprocess = ending
            plugin._mpi_runtestprotocol = ending.judging(plugin._mpi_runtestprotocol)


@dataclass
class MpiexecEnding:
    """Stands in for the ``subprocess`` module of pytest-isolate-mpi, which reads only the ranks'
    report files: it remembers how the last mpiexec ended, so that a job whose ranks all passed but
    which then exited non-zero or hung until the timeout (in MPI_Finalize, an atexit hook, a
    checkpoint thread) fails its test."""

    TimeoutExpired = subprocess.TimeoutExpired
    returncode: int | None = None
    output: tuple[str, str] = field(default=("", ""))

    def run(self, cmd: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run``, remembering the exit code (None: killed at the timeout) and output."""
        try:
            done = subprocess.run(cmd, **kwargs)
        except subprocess.TimeoutExpired as timeout:
            self.returncode, self.output = None, (_text(timeout.stdout), _text(timeout.stderr))
            raise
        self.returncode, self.output = done.returncode, (done.stdout or "", done.stderr or "")
        return done

    def judging(self, run_test: Callable[[pytest.Item], list]) -> Callable[[pytest.Item], list]:
        """``run_test`` with one more failed report when every rank passed but mpiexec did not end well."""

        def run(item: pytest.Item) -> list:
            reports = run_test(item)
            if self.returncode == 0 or any(report.failed for report in reports):
                return reports
            if self.returncode is None:
                why = "mpiexec was killed at the test's timeout after every rank had reported (a hang at exit)"
            else:
                why = f"mpiexec exited with code {self.returncode} after every rank had reported"
            failed = pytest.TestReport(nodeid=item.nodeid, location=item.location, outcome="failed", when="call",
                                       keywords={}, longrepr=f"{why}; its output is below")
            failed.sections += [("Captured stdout mpiexec", self.output[0]),
                                ("Captured stderr mpiexec", self.output[1])]
            return [*reports, failed]

        return run


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def require_tool(name: str, how: str, probe: Sequence[str] | None = None) -> None:
    """Skip the calling test when the command ``name`` is missing (or, with ``probe``, when
    ``name *probe`` fails, e.g. ``sinfo -h`` with no cluster up), saying ``how`` to get it; under
    CI=true, where CI provides it, fail instead, so that no test is silently skipped there."""
    if shutil.which(name) is None:
        missing = f"{name} is not installed"
    elif probe is not None and subprocess.run([name, *probe], capture_output=True, timeout=60).returncode != 0:
        missing = f"{' '.join([name, *probe])} fails"
    else:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing}: {how} (CI provides it, so under CI=true this fails instead of skipping)",
                    pytrace=False)
    pytest.skip(f"{missing}: {how}")


def assert_no_failures(comm, failures: list) -> None:
    """Every rank fails together, naming what failed on which rank (Heat-style collective assert)."""
    everyone = comm.allgather(failures[:20])
    assert not any(everyone), "\n".join(f"rank {r}: {f}" for r, fs in enumerate(everyone) for f in fs)


@dataclass
class Finished:
    """A launched job's exit code, output and wall time."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _mpiexec() -> str:
    """The mpiexec beside this interpreter (the embedded MPICH), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else "mpiexec"


@pytest.fixture
def launch(tmp_path: Path) -> Callable[..., Finished]:
    """Run ``python ARGS`` on ``ranks`` ranks (no mpiexec when ranks is None) under a timeout."""

    def run(args: Sequence[str], ranks: int | None = None, timeout: float = 60,
            env: dict | None = None, cwd: Path | None = None) -> Finished:
        cmd = [sys.executable, *args]
        if ranks is not None:
            cmd = [_mpiexec(), "-n", str(ranks), *cmd]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})}, cwd=cwd or tmp_path)
        return Finished(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)

    return run
