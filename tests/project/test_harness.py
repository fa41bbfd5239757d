"""The MPI test harness catches a failing, a hanging and a dying rank instead of hanging the suite."""

import re
from pathlib import Path

CASES = Path(__file__).parent / "cases" / "failing_and_hanging.py"


def _run_case(launch, name: str):
    return launch(["-m", "pytest", "-p", "no:cacheprovider", f"{CASES}::{name}", "-rA"],
                  timeout=120, cwd=Path(__file__).parents[2], env={"COLUMNS": "300"})


def test_failing_rank_is_named_with_its_traceback(launch):
    result = _run_case(launch, "test_rank_one_fails")
    assert result.returncode == 1, result.stdout
    assert re.search(r"FAILED .*test_rank_one_fails\[3\]\[rank=1\] - AssertionError: rank 1 computed the wrong",
                     result.stdout), result.stdout
    assert "assert comm.rank != 1" in result.stdout  # the failing rank's traceback
    assert "[rank=0]" not in result.stdout.split("short test summary")[1]
    assert "[rank=2]" not in result.stdout.split("short test summary")[1]


def test_hanging_rank_fails_within_its_timeout(launch):
    result = _run_case(launch, "test_rank_one_hangs")
    assert result.returncode == 1, result.stdout
    assert "Timeout occurred" in result.stdout and "exceeded run time limit of 5s" in result.stdout
    assert result.seconds < 5 + 20, f"took {result.seconds:.1f}s for a 5 s timeout"


def test_dying_rank_fails_the_test(launch):
    result = _run_case(launch, "test_rank_one_dies")
    assert result.returncode == 1, result.stdout
    assert "At least one MPI process has exited prematurely" in result.stdout
    assert result.seconds < 25, f"took {result.seconds:.1f}s"


def test_rank_exiting_nonzero_after_passing_fails_the_test(launch):
    result = _run_case(launch, "test_rank_one_exits_nonzero_after_passing")
    assert result.returncode == 1, result.stdout
    assert re.search(r"FAILED .*test_rank_one_exits_nonzero_after_passing\[2\] - mpiexec exited with code 7 "
                     r"after every rank had reported", result.stdout), result.stdout
    assert "2 passed" in result.stdout  # both ranks did pass: only the exit code fails the test


def test_rank_hanging_at_exit_after_passing_fails_within_its_timeout(launch):
    result = _run_case(launch, "test_rank_one_hangs_at_exit_after_passing")
    assert result.returncode == 1, result.stdout
    assert re.search(r"FAILED .*test_rank_one_hangs_at_exit_after_passing\[2\] - mpiexec was killed at the "
                     r"test's timeout after every rank had reported", result.stdout), result.stdout
    assert result.seconds < 5 + 20, f"took {result.seconds:.1f}s for a 5 s timeout"
