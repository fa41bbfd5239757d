"""Under Open MPI with ULFM (``mpiexec --with-ft ulfm``): a rank is SIGKILLed, the survivors revoke,
shrink and finish with p-1 ranks (MPI_Finalize included), and the death is on record for
``hpcrt diagnose``. The job runs in the Open MPI environment that ``.ci/ulfm`` builds; it is
skipped under MPICH, which has no ULFM."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrt._src.ulfm import ASYNC_FINALIZE, FT_ENABLED, skip_finalize_fence
from hpcrt.monitor import diagnose, format_diagnosis

BIN = Path(sys.executable).parent
PROGRAM = str(Path(__file__).parent / "monitor_cases" / "train_loop.py")

needs_ulfm = pytest.mark.skipif(shutil.which("ompi_info", path=str(BIN)) is None,
                                reason="needs the Open MPI wheel with ULFM: run .ci/ulfm")


def test_finalize_fence_skipped_only_under_ulfm():
    under_ulfm, plain, chosen = {FT_ENABLED: "1"}, {}, {FT_ENABLED: "1", ASYNC_FINALIZE: "0"}
    for environ in (under_ulfm, plain, chosen):
        skip_finalize_fence(environ)
    assert under_ulfm[ASYNC_FINALIZE] == "1" and ASYNC_FINALIZE not in plain and chosen[ASYNC_FINALIZE] == "0"


@needs_ulfm
def test_survivors_shrink_and_finish(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "HPCRT_FAULT": "kill:rank=2,step=15", "HPCRT_MONITOR_DEATH_ACTIONS": "log,callback,shrink",
           "HPCRT_MONITOR_REPORT_EVERY": "20", "HPCRT_LOG_FILES": "0"}
    cmd = [str(BIN / "mpiexec"), "--with-ft", "ulfm", "--oversubscribe", "-n", "4", sys.executable, PROGRAM,
           "--run-dir", str(run_dir), "--steps", "60", "--ulfm"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    finished = re.findall(r"rank (\d+) finished 60 steps with (\d+) ranks", result.stdout)  # lines may be joined
    assert sorted(finished) == [("0", "3"), ("1", "3"), ("3", "3")], result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert "death: rank 2 on node" in result.stderr and "going on with 3 ranks" in result.stderr
    report = format_diagnosis(diagnose(run_dir))
    assert "rank 2 on node" in report and "survivors shrank" in report, report
