"""``hpcrt diagnose`` on run directories written by the monitor's own writers, whole and damaged:
missing or truncated files are named and the rest is still reported."""

import json
import subprocess
import sys

import pytest

from hpcrt._src import recorder as recorder_module
from hpcrt._src.dumps import write_dump
from hpcrt._src.monitor_config import MonitorConfig
from hpcrt._src.recorder import FlightRecorder
from hpcrt._src.sidechannel import MonitorDir, write_json
from hpcrt._src.watchdog import Watchdog
from hpcrt.monitor import diagnose, format_diagnosis


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
            rec.exit(rec.enter_collective("allreduce", comm, 4096))
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
