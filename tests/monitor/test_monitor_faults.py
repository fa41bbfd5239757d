"""Acceptance tests of the monitor on real 4-rank jobs (mpiexec): a slowed rank is named and
only it, a clean run names nobody, a stopped rank is found missing from the collective the others
are blocked in, a killed rank is named with its last step, an injected exception ends the job."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROGRAM = str(Path(__file__).parent / "cases" / "train_loop.py")
WINDOW = 100
"""Steps per straggler window: medians of 100 samples of N(10 ms, 3 ms) differ by a few percent."""


def _diagnose(run_dir: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "hpcrt", "diagnose", str(run_dir)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _reports(run_dir: Path) -> list:
    return [json.loads(line) for line in (run_dir / "monitor" / "stragglers.jsonl").read_text().splitlines()]


def test_slowed_rank_and_only_it_is_reported_within_three_windows(launch, tmp_path):
    # N(10 ms, 3 ms) of work per step everywhere; rank 2 sleeps 5 ms more: 1.5x slower
    env = {"HPCRT_MONITOR_REPORT_EVERY": str(WINDOW), "HPCRT_FAULT": "delay:rank=2,step=0,ms=5"}
    result = launch([PROGRAM, "--run-dir", str(tmp_path / "run"), "--steps", str(4 * WINDOW)], ranks=4,
                    timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    reports = _reports(tmp_path / "run")
    assert len(reports) == 4
    named = {s["rank"] for r in reports for s in r["stragglers"]}
    assert named == {2}, reports
    first = next(r for r in reports if r["stragglers"])
    assert first["window"] <= 2
    straggler = first["stragglers"][0]
    assert straggler["section"] == "work" and straggler["score"] < 0.75 and straggler["node"]
    assert "straggler: rank 2 on node" in result.stderr and "section 'work'" in result.stderr
    # the slowed rank arrives late at the collective; the others wait inside it
    late = first["collectives"]["allreduce"]["late_ms"]
    assert max(range(4), key=late.__getitem__) == 2
    assert result.stdout.count("CALLBACK straggler rank 2") == 4  # on every rank (mpiexec may join lines)


def test_clean_run_reports_no_straggler(launch, tmp_path):
    env = {"HPCRT_MONITOR_REPORT_EVERY": str(WINDOW)}
    result = launch([PROGRAM, "--run-dir", str(tmp_path / "run"), "--steps", str(6 * WINDOW)], ranks=4,
                    timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    reports = _reports(tmp_path / "run")
    assert len(reports) == 6
    assert [s for r in reports for s in r["stragglers"]] == []
    assert "straggler:" not in result.stderr


def test_stopped_rank_is_found_missing_from_the_collective(launch, tmp_path):
    timeout_s = 4
    env = {"HPCRT_MONITOR_COLLECTIVE_TIMEOUT_S": str(timeout_s), "HPCRT_MONITOR_HEARTBEAT_TIMEOUT_S": "30",
           "HPCRT_FAULT": "stop:rank=2,step=20"}
    run_dir = tmp_path / "run"
    result = launch([PROGRAM, "--run-dir", str(run_dir), "--steps", "100000"], ranks=4, timeout=120, env=env)
    ended = time.time()
    assert result.returncode == 75, result.stderr
    stopped_at = json.loads((run_dir / "monitor" / "heartbeat" / "rank-00002.json").read_text())["time"]
    assert ended - stopped_at < timeout_s + 5, f"the job ended {ended - stopped_at:.1f} s after the stop"
    assert "aborting the job with exit code 75" in result.stderr
    dumps = sorted(p.name for p in (run_dir / "monitor" / "dumps").iterdir())
    assert dumps == ["rank-00000.json", "rank-00001.json", "rank-00003.json"]
    report = _diagnose(run_dir)
    line = next(x for x in report.splitlines() if x.startswith("collective 'allreduce'"))
    assert "#21, 8192 bytes" in line and "blocked in it; never entered by ranks {2}" in line, report
    assert "no dump from ranks {2}" in report
    assert "comm.Allreduce(MPI.IN_PLACE" in report  # where the blocked ranks were stuck
    assert "last completed: collective 'allreduce'" in report  # rank 2's, from its heartbeat


def test_silent_rank_is_named_by_the_survivors_before_they_abort(launch, tmp_path):
    # the collectives' timeout is far off: the stopped rank's heartbeat falls silent first
    env = {"HPCRT_MONITOR_COLLECTIVE_TIMEOUT_S": "120", "HPCRT_MONITOR_HEARTBEAT_TIMEOUT_S": "2",
           "HPCRT_FAULT": "stop:rank=2,step=20"}
    result = launch([PROGRAM, "--run-dir", str(tmp_path / "run"), "--steps", "100000"], ranks=4, timeout=120,
                    env=env)
    assert result.returncode == 75, result.stderr
    assert "death: rank 2 on node" in result.stderr and "stopped sending heartbeats (last step 20)" in result.stderr
    events = [json.loads(line) for line in (tmp_path / "run" / "monitor" / "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["rank"], e["detected_by"]) for e in events] == [("death", 2, 1)]


def test_killed_rank_is_named_with_its_last_step(launch, tmp_path):
    run_dir = tmp_path / "run"
    env = {"HPCRT_FAULT": "kill:rank=1,step=15"}
    result = launch([PROGRAM, "--run-dir", str(run_dir), "--steps", "100000"], ranks=4, timeout=120, env=env)
    assert result.returncode != 0
    deadline = time.time() + 10  # the exit records are written by detached helpers
    while len(list((run_dir / "monitor" / "heartbeat").glob("*.exit.json"))) < 4 and time.time() < deadline:
        time.sleep(0.1)
    killed = json.loads((run_dir / "monitor" / "heartbeat" / "rank-00001.exit.json").read_text())
    assert (killed["step"], killed["in_collective"]) == (15, False)  # its progress words, read after SIGKILL
    report = _diagnose(run_dir)
    assert "died first: rank 1 on node" in report and "(last step 15)" in report, report


def test_injected_exception_ends_the_job(launch, tmp_path):
    env = {"HPCRT_FAULT": "raise:rank=3,step=5"}
    result = launch([PROGRAM, "--run-dir", str(tmp_path / "run"), "--steps", "100000"], ranks=4, timeout=120,
                    env=env)
    assert result.returncode != 0
    assert "InjectedFault: fault injected on rank 3 at step 5" in result.stderr


@pytest.mark.parametrize("env, key", [({"HPCRT_MONITOR_THRESHOLD": "1.5"}, "'threshold'"),
                                      ({"HPCRT_MONITOR_HANG_ACTIONS": "log,panic"}, "'hang_actions'"),
                                      ({"HPCRT_MONITOR_DEATH_ACTIONS": "log,shrink"}, "'death_actions'")])
def test_bad_config_stops_the_job_naming_the_key(launch, tmp_path, env, key):
    result = launch([PROGRAM, "--run-dir", str(tmp_path / "run"), "--steps", "10"], ranks=2, timeout=60, env=env)
    assert result.returncode != 0 and key in result.stderr and "ConfigError" in result.stderr
