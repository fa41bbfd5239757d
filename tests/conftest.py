"""Test-suite settings. MPI tests carry ``@pytest.mark.mpi(ranks=[...], timeout=...)``:
pytest-isolate-mpi runs each in its own ``mpiexec`` and reports every rank's failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
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
