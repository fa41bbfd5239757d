"""Graceful stop and requeue, serially: the flag a signal sets, the agreed reason, the time budget,
and each reason a requeue is or is not asked for (a fake scontrol on PATH records the call)."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest
from mpi4py import MPI

import hpcrt
from hpcrt.core.stopping import slurm_deadline


def test_a_signal_only_sets_the_flag_and_the_reason_names_it():
    stop = hpcrt.GracefulStop(["SIGUSR1", "usr2"])
    try:
        assert stop.requested(MPI.COMM_SELF) is None
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR1)  # the first one is the reason
        assert stop.requested(MPI.COMM_SELF) == "SIGUSR2"
    finally:
        stop.close()
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL


def test_the_time_budget_is_a_reason_and_slurm_end_time_sets_it(monkeypatch):
    stop = hpcrt.GracefulStop([], deadline=0.0)
    assert stop.requested(MPI.COMM_SELF) == "time budget"
    assert slurm_deadline({"SLURM_JOB_END_TIME": "1000"}, 120) == 880
    assert slurm_deadline({}, 120) is None
    monkeypatch.setenv("SLURM_JOB_END_TIME", "2000")
    assert hpcrt.environment_deadline(100, max_minutes=60, started=0) == 1900
    assert hpcrt.environment_deadline(100, max_minutes=1, started=0) == 60


def test_unknown_signal_is_refused():
    with pytest.raises(ValueError, match="unknown signal 'SIGNOPE'"):
        hpcrt.GracefulStop(["SIGNOPE"])


@pytest.fixture
def scontrol(tmp_path, monkeypatch) -> Path:
    """A fake ``scontrol`` first on PATH that records its arguments."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    return calls


def test_requeue_asks_for_this_array_task_only(tmp_path, scontrol):
    env = {"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "2", "SLURM_RESTART_COUNT": "1"}
    assert hpcrt.request_requeue(tmp_path, 3, env) == (True, "requeued as job 10_2 (restart 2 of at most 3)")
    assert scontrol.read_text().split() == ["requeue", "10_2"]


@pytest.mark.parametrize("env, done, why", [
    ({}, False, "not a Slurm job"),
    ({"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "3"}, False, "the requeue cap is reached"),
    ({"SLURM_JOB_ID": "7"}, True, "the run is done"),
])
def test_no_requeue_outside_slurm_past_the_cap_or_after_done(tmp_path, scontrol, env, done, why):
    if done:
        hpcrt.write_stop_record(tmp_path, "done", 5, 0)
    requeued, said = hpcrt.request_requeue(tmp_path, 3, env)
    assert not requeued and said.startswith(why)
    assert not scontrol.exists()


def test_a_missing_scontrol_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert hpcrt.request_requeue(tmp_path, 3, {"SLURM_JOB_ID": "7"}) == (
        False, "scontrol is not on PATH: requeue it yourself (scontrol requeue 7)")


def test_the_stop_record_is_replaced_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    hpcrt.write_stop_record(tmp_path, "SIGUSR2", 9, 124, True, "requeued")
    record = json.loads((tmp_path / "stop.json").read_text())
    assert record["reason"] == "SIGUSR2" and record["step"] == 9 and record["restart_count"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stop.json"]
