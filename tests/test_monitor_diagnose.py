"""``hpcrt diagnose`` on run directories written by the monitor's own writers, whole and damaged:
missing or truncated files are named and the rest is still reported."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcrt._src import diagnose as diagnose_module
from hpcrt._src import recorder as recorder_module
from hpcrt._src.dumps import write_dump
from hpcrt._src.monitor_config import MonitorConfig
from hpcrt._src.recorder import FlightRecorder
from hpcrt._src.sidechannel import MonitorDir, write_json
from hpcrt._src.watchdog import Watchdog
from hpcrt.monitor import diagnose, format_diagnosis

PROGRESS_RANK = Path(__file__).parent / "monitor_cases" / "progress_rank.py"


class FakeComm:
    """Stands for the job's communicator; every rank's recorder labels it alike."""


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """Three ranks: 0 and 1 blocked in their 6th allreduce, rank 2 stopped after its 5th."""
    monkeypatch.setattr(recorder_module, "_world_ranks", lambda comm: [0, 1, 2])
    mdir = MonitorDir(tmp_path / "run" / "monitor").create()
    write_json(mdir.meta, {"size": 3, "nodes": ["n0", "n0", "n1"]})
    for rank in range(3):
        rec, comm = FlightRecorder(64), FakeComm()
        for step in range(5):
            rec.exit_collective(rec.enter_collective("allreduce", comm, 4096))
            rec.step += 1
        if rank != 2:
            rec.enter_collective("allreduce", comm, 4096)
            write_dump(mdir.dump(rank), rank, f"n{rank // 2}", rec, "test")
        Watchdog(MonitorConfig(), mdir, rank, f"n{rank // 2}", rec, lambda kind, event: None).heartbeat("running")
    mdir.raise_alarm({"kind": "hang", "by": 0, "message": "allreduce timed out"})
    return tmp_path / "run"


def test_whole_run_dir(run_dir):
    d = diagnose(run_dir)
    [coll] = d["collectives"]
    assert (coll["op"], coll["cseq"], coll["nbytes"]) == ("allreduce", 5, 4096)
    assert coll["blocked"] == [0, 1] and coll["never_entered"] == [2] and coll["unknown"] == []
    assert d["problems"] == ["no dump from ranks {2} (stopped, dead, or killed before dumping)"]
    assert d["ranks"][2]["last_completed"]["cseq"] == 4 and d["ranks"][2]["node"] == "n1"
    text = format_diagnosis(d)
    assert "blocked in it; never entered by ranks {2}" in text and "alarm raised by rank 0" in text


def test_missing_and_truncated_files_are_named_and_the_rest_reported(run_dir):
    monitor = run_dir / "monitor"
    dump = monitor / "dumps" / "rank-00001.json"
    dump.write_text(dump.read_text()[:200])
    (monitor / "heartbeat" / "rank-00001.json").unlink()
    (monitor / "job.json").unlink()
    (monitor / "stragglers.jsonl").write_text(json.dumps({"stragglers": []}) + "\n{\"stragg")
    d = diagnose(run_dir)
    text = "\n".join(d["problems"])
    assert "job.json is missing or unreadable" in text
    assert "rank 1: dump rank-00001.json is truncated or unreadable" in text
    assert "no heartbeat file for ranks {1}" in text
    assert "stragglers.jsonl line 2 is truncated" in text
    [coll] = d["collectives"]
    assert d["size"] == 3 and coll["blocked"] == [0] and coll["never_entered"] == [2] and coll["unknown"] == [1]
    assert "no data from ranks {1}" in format_diagnosis(d)


def test_directory_without_monitor_files(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hpcrt", "diagnose", str(tmp_path / "nowhere")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "does not exist" in result.stdout


def _killed_ranks(mdir: MonitorDir, progress: dict, kill_order: list, pause_s: float = 0.0) -> None:
    """Real processes with their sentinels, SIGKILLed in ``kill_order``; ``progress`` maps a rank to
    its (step, collective depth) at the kill."""
    write_json(mdir.meta, {"size": len(progress), "nodes": ["n0"] * len(progress)})
    procs = {rank: subprocess.Popen([sys.executable, str(PROGRESS_RANK), str(mdir.root), str(rank),
                                     *map(str, words)], stdout=subprocess.PIPE, text=True)
             for rank, words in progress.items()}
    try:
        for proc in procs.values():
            assert proc.stdout.readline() == "ready\n"
        for rank in kill_order:
            procs[rank].kill()
            procs[rank].wait()
            time.sleep(pause_s)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    deadline = time.time() + 20
    while not all(mdir.exit_record(r).exists() for r in progress) and time.time() < deadline:
        time.sleep(0.05)


def test_sentinels_record_progress_and_the_rank_waited_on_died_first(tmp_path, monkeypatch):
    # rank 1 dies at step 15 between collectives; the launcher kills the others in the same few
    # milliseconds: rank 0 computing step 16, rank 2 blocked in step 16's collective, rank 3 still
    # in step 15's. Their sentinels' clocks cannot order the ends (the test widens the window so
    # that a loaded machine cannot spread them past it); their progress words can
    monkeypatch.setattr(diagnose_module, "CLOCK_TIE_S", 10.0)
    mdir = MonitorDir(tmp_path / "monitor").create()
    _killed_ranks(mdir, {0: (16, 0), 1: (15, 0), 2: (16, 1), 3: (15, 1)}, kill_order=[2, 3, 0, 1])
    exits = {r: json.loads(mdir.exit_record(r).read_text()) for r in range(4)}
    assert [(exits[r]["step"], exits[r]["in_collective"]) for r in range(4)] == [(16, False), (15, False),
                                                                                 (16, True), (15, True)]
    d = diagnose(mdir.root)
    assert [x["rank"] for x in d["deaths"]][0] == 1 and {x["rank"] for x in d["deaths"]} == {0, 1, 2, 3}
    text = format_diagnosis(d)
    assert "died first: rank 1 on node n0 (last step 15)" in text and "it was the one they waited on" in text
    assert [r["last_step"] for r in d["ranks"]] == [16, 15, 16, 15]


def test_ends_far_apart_are_ordered_by_clock(tmp_path):
    mdir = MonitorDir(tmp_path / "monitor").create()
    _killed_ranks(mdir, {0: (16, 1), 1: (15, 0)}, kill_order=[0, 1], pause_s=1.0)
    d = diagnose(mdir.root)
    assert [x["rank"] for x in d["deaths"]] == [0, 1] and d["deaths"][1]["after_first_s"] >= 0.9
    assert "died first: rank 0 on node n0 (last step 16)" in format_diagnosis(d)


def test_exit_records_without_progress_are_ordered_by_clock(tmp_path):
    mdir = MonitorDir(tmp_path / "monitor").create()
    write_json(mdir.meta, {"size": 2, "nodes": ["n0", "n0"]})
    for rank, at in ((0, 100.01), (1, 100.0)):  # written by an older sentinel: no step, no depth
        write_json(mdir.exit_record(rank), {"rank": rank, "pid": 1, "host": "n0", "ended_at": at, "finished": False})
    d = diagnose(mdir.root)
    assert [x["rank"] for x in d["deaths"]] == [1, 0] and {x["ordered_by"] for x in d["deaths"]} == {"clock"}
    assert "waited on" not in format_diagnosis(d)
