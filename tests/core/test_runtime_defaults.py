"""hpcrt.init's documented defaults in fresh 2-rank jobs: rank 0 logs to the console at
``log_level``, the others warnings only (every rank's file gets its all); the run directory is
``hpcrt-runs/<date-time>`` under the working directory, or ``hpcrt-runs/slurm-<job id>`` under Slurm."""

import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

PROGRAM = str(Path(__file__).parent / "cases" / "log_levels.py")


def _run(launch, cwd: Path, level: str, env: dict) -> tuple:
    cwd.mkdir()
    result = launch([PROGRAM, level], ranks=2, cwd=cwd, env={"HPCRT_LOG_FILES": "1", **env})
    assert result.returncode == 0, result.stderr
    # mpiexec merges the ranks' stdout chunk by chunk, so one line may hold both ranks' objects
    printed = sorted((json.loads(found) for found in re.findall(r"\{[^{}]*\}", result.stdout)),
                     key=lambda x: x["rank"])
    assert [p["rank"] for p in printed] == [0, 1], result.stdout
    return result.stderr, [Path(p["run_dir"]) for p in printed]


@pytest.mark.parametrize("level, on_rank_0", [("INFO", ["info", "warning"]), ("DEBUG", ["debug", "info", "warning"]),
                                              ("WARNING", ["warning"])])
def test_rank_0_logs_at_log_level_and_the_others_warnings_only(launch, tmp_path, level, on_rank_0):
    stderr, run_dirs = _run(launch, tmp_path / "job", level, {})
    seen = {(lvl, rank) for lvl, rank in re.findall(r"(debug|info|warning) from rank (\d)", stderr)}
    assert seen == {(lvl, "0") for lvl in on_rank_0} | {("warning", "1")}, stderr
    rank_1_file = (run_dirs[1] / "logs" / "rank-00001.log").read_text()
    assert [lvl for lvl in ("debug", "info", "warning") if f"{lvl} from rank 1" in rank_1_file] == on_rank_0


def test_default_run_dir_is_a_new_date_time_directory_under_hpcrt_runs(launch, tmp_path):
    before = time.time()
    _, run_dirs = _run(launch, tmp_path / "job", "INFO", {})
    after = time.time()
    assert run_dirs[0] == run_dirs[1] and run_dirs[0].parent == tmp_path / "job" / "hpcrt-runs"
    started = datetime.strptime(run_dirs[0].name, "%Y%m%d-%H%M%S").timestamp()
    assert int(before) - 1 <= started <= after
    assert sorted(p.name for p in (run_dirs[0] / "logs").iterdir()) == ["rank-00000.log", "rank-00001.log"]


def test_default_run_dir_under_slurm_is_the_jobs(launch, tmp_path):
    _, run_dirs = _run(launch, tmp_path / "job", "INFO", {"SLURM_JOB_ID": "4242"})
    assert run_dirs == [tmp_path / "job" / "hpcrt-runs" / "slurm-4242"] * 2
