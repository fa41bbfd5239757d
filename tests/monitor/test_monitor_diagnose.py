"""``hpcrt diagnose`` on run directories written by the monitor's own writers, whole and damaged:
missing or truncated files are named and the rest is still reported."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcrt.core.files import read_json, write_json
from hpcrt.monitor import diagnose, format_diagnosis
from hpcrt.monitor import diagnosis as diagnose_module
from hpcrt.monitor import recorder as recorder_module
from hpcrt.monitor.config import MonitorConfig
from hpcrt.monitor.dumps import write_dump
from hpcrt.monitor.recorder import FlightRecorder
from hpcrt.monitor.sidechannel import MonitorDir
from hpcrt.monitor.watchdog import Watchdog

PROGRESS_RANK = Path(__file__).parent / "cases" / "progress_rank.py"


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
    assert "rank 1: dump rank-00001.json is not valid JSON" in text
    assert "no heartbeat file for ranks {1}" in text
    assert "stragglers.jsonl line 2 is truncated" in text
    [coll] = d["collectives"]
    assert d["size"] == 3 and coll["blocked"] == [0] and coll["never_entered"] == [2] and coll["unknown"] == [1]
    assert "no data from ranks {1}" in format_diagnosis(d)


def test_directory_without_monitor_files(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hpcrt", "diagnose", str(tmp_path / "nowhere")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr, result.stderr


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


def _hostile(monitor: Path) -> dict:
    """Damage a whole run directory in every way the adversarial probe tried; what each is named as."""
    (monitor / "heartbeat" / "rank-00001.json").unlink()
    (monitor / "heartbeat" / "rank-00001.json").symlink_to("/dev/zero")
    (monitor / "dumps" / "rank-00000.json").unlink()
    os.mkfifo(monitor / "dumps" / "rank-00000.json")
    (monitor / "heartbeat" / "rank-00002.exit.json").mkdir()
    with open(monitor / "stragglers.jsonl", "wb") as f:
        f.truncate(100 << 20)  # sparse: no disk used
    beat = json.loads((monitor / "heartbeat" / "rank-00000.json").read_text())
    beat["last_completed"]["cseq"] = "five"
    (monitor / "heartbeat" / "rank-00000.json").write_text(json.dumps(beat))
    (monitor / "alarm.json").write_text("[" * 100_000)
    (monitor / "job.json").write_text(json.dumps({"size": 10 ** 9}))
    (monitor / "events.jsonl").write_bytes(b'{"kind": "death", "rank": 1}\n\xff\xfe\n[1, 2]\n')
    return {
        "rank 1: heartbeat rank-00001.json is not a regular file (it is a character device)",
        "rank 0: dump rank-00000.json is not a regular file (it is a FIFO)",
        "rank 2: exit record rank-00002.exit.json is not a regular file (it is a directory)",
        "stragglers.jsonl is 104857600 bytes, more than the",
        "rank 0: heartbeat rank-00000.json is damaged (last_completed: unexpected",
        "alarm alarm.json nests deeper than 32 levels",
        "job.json gives 1000000000 ranks, not a world size",
        "events.jsonl line 2 is truncated or unreadable; skipped",
        "events.jsonl line 3 is top level: expected an object, got [1, 2]; skipped",
    }


def test_hostile_files_are_named_and_skipped_and_the_rest_reported(run_dir):
    expected = _hostile(run_dir / "monitor")
    result = subprocess.run([sys.executable, "-m", "hpcrt", "diagnose", str(run_dir)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    for problem in expected:
        assert sum(problem in w for w in warnings) == 1, (problem, warnings)
    assert "(3 ranks)" in result.stdout.splitlines()[0]
    # what is whole is still reported: rank 1's dump shows it blocked in the allreduce rank 2 never entered
    assert "ranks {1} blocked in it; never entered by ranks {2}; no data from ranks {0}" in result.stdout
    assert "death reported by rank None: rank 1" in result.stdout


def test_nothing_to_report_is_one_line_and_exit_code_2(tmp_path):
    monitor = MonitorDir(tmp_path / "monitor").create()
    monitor.meta.write_text(json.dumps({"size": 10 ** 9}))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "hpcrt", "diagnose", str(tmp_path)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert "job.json gives 1000000000 ranks" in result.stderr and time.monotonic() - started < 10


def test_the_job_never_reads_a_fifo_or_a_device_as_a_heartbeat(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    assert read_json(tmp_path / "fifo.json") is None and read_json(tmp_path / "zero.json") is None


def test_a_fifo_for_a_heartbeat_does_not_keep_the_sentinel_from_recording_the_end(tmp_path):
    mdir = MonitorDir(tmp_path / "monitor").create()
    os.mkfifo(mdir.heartbeat(0))
    _killed_ranks(mdir, {0: (3, 0)}, kill_order=[0])
    record = json.loads(mdir.exit_record(0).read_text())
    assert (record["finished"], record["step"]) == (False, 3)


def test_a_clean_run_says_every_rank_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(recorder_module, "_world_ranks", lambda comm: [0, 1])
    mdir = MonitorDir(tmp_path / "monitor").create()
    write_json(mdir.meta, {"size": 2, "nodes": ["n0", "n0"]})
    for rank in range(2):
        rec = FlightRecorder(64)
        rec.exit_collective(rec.enter_collective("allreduce", FakeComm(), 64))
        rec.step += 1
        Watchdog(MonitorConfig(), mdir, rank, "n0", rec, lambda kind, event: None).heartbeat("finished")
    result = subprocess.run([sys.executable, "-m", "hpcrt", "diagnose", str(tmp_path)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.splitlines()[1] == ("every rank finished: all 2 ranks stopped their monitor normally; "
                                             "nothing hung or died")
    assert "stopped or killed" not in result.stdout
    assert result.stdout.count("finished: its monitor stopped normally at ") == 2


def test_a_run_without_a_monitor_is_one_line_and_exit_code_2(tmp_path):
    (tmp_path / "logs").mkdir()
    result = subprocess.run([sys.executable, "-m", "hpcrt", "diagnose", str(tmp_path)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == "", result.stdout
    assert result.stderr == f"hpcrt diagnose: error: no monitor ran in this job: {tmp_path} has no monitor/ folder\n"


def test_a_closed_pipe_ends_diagnose_quietly(run_dir):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write, as `| head -1` is after its line
    try:
        result = subprocess.run([sys.executable, "-m", "hpcrt", "diagnose", str(run_dir), "--json"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == "", result.stderr
