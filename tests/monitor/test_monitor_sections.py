"""Section timeouts and the dump grace on real 2-rank jobs: a section in flight longer than
``section_timeout_s`` is a hang (and with the default 0 it is not); ``abort`` after ``dump`` waits
``dump_grace_s`` so every rank dumps first."""

import json
import time
from pathlib import Path

PROGRAM = str(Path(__file__).parent / "cases" / "long_section.py")


def _events(run_dir: Path) -> list:
    path = run_dir / "monitor" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_section_past_its_timeout_is_a_hang_and_only_with_a_timeout(launch, tmp_path):
    env = {"HPCRT_MONITOR_SECTION_TIMEOUT_S": "1", "HPCRT_MONITOR_HANG_ACTIONS": "log,callback"}
    result = launch([PROGRAM, "--run-dir", str(tmp_path / "on"), "--hold", "3"], ranks=2, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("CALLBACK hang in 'load' on rank 1") == 1, result.stdout
    assert "hang: rank 1 on node" in result.stderr and "has been in section 'load'" in result.stderr
    [hang] = _events(tmp_path / "on")
    assert (hang["kind"], hang["by"], hang["rank"], hang["op"], hang["timeout_s"]) == ("hang", 1, 1, "load", 1.0)
    assert 1.0 < hang["elapsed_s"] < 3.0
    env.pop("HPCRT_MONITOR_SECTION_TIMEOUT_S")  # the default, 0, turns section timeouts off
    result = launch([PROGRAM, "--run-dir", str(tmp_path / "off"), "--hold", "3"], ranks=2, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "CALLBACK hang" not in result.stdout and _events(tmp_path / "off") == []


def test_abort_waits_the_dump_grace_so_every_rank_dumps(launch, tmp_path):
    grace_s = 3
    env = {"HPCRT_MONITOR_SECTION_TIMEOUT_S": "1", "HPCRT_MONITOR_HANG_ACTIONS": "log,dump,abort",
           "HPCRT_MONITOR_DUMP_GRACE_S": str(grace_s)}
    run_dir = tmp_path / "run"
    result = launch([PROGRAM, "--run-dir", str(run_dir), "--hold", "60"], ranks=2, timeout=60, env=env)
    ended = time.time()
    assert result.returncode == 75, result.stderr
    [hang] = _events(run_dir)
    assert hang["kind"] == "hang"
    assert ended - hang["time"] >= grace_s, f"aborted {ended - hang['time']:.1f} s after the hang"
    assert sorted(p.name for p in (run_dir / "monitor" / "dumps").iterdir()) == ["rank-00000.json", "rank-00001.json"]
