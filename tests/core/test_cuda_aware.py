"""CUDA-awareness is confirmed, not assumed: a probe's yes holds only after a device-buffer exchange checked
value by value on every rank (fake GPU buffers on a CPU rank); any failure stages on every rank, never hangs
or kills the job."""

import json
import signal
import sys
import textwrap

import pytest

from hpcrt.backends import cuda_aware

JOB = textwrap.dedent("""
    import json, sys
    from mpi4py import MPI
    from hpcrt.backends import cuda_aware
    rank, case = MPI.COMM_WORLD.rank, sys.argv[1]
    yes = case != "probe_yes_on_rank_0" or rank == 0
    cuda_aware.probe_cuda_support = lambda library=None: (yes, f"a test probe saying {int(yes)}")
    if case == "wrong_numbers_from_rank_0" and rank == 0:
        right = cuda_aware.payload
        cuda_aware.payload = lambda r, count: right(r, count) + (r == 0)  # what rank 0 sends, not what it checks
    if case == "rank_0_never_sends" and rank == 0:
        cuda_aware.CUDA_AWARE_CHECK = 99
    if case == "rank_1_child_crashes" and rank == 1:
        cuda_aware.self_exchange_command = lambda device: [
            sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    if case == "rank_1_check_raises" and rank == 1:  # subprocess raises FileNotFoundError: the check never returns
        cuda_aware.self_exchange_command = lambda device: ["/nonexistent/hpcrt-check"]
    cuda_aware.EXCHANGE_TIMEOUT_S = 2.0
    import hpcrt
    decision = hpcrt.init({"log_files": False}).cuda_aware
    rows = MPI.COMM_WORLD.gather({"rank": rank, "enabled": decision.enabled, "probed": decision.probed,
                                  "confirmed": decision.confirmed, "reason": decision.reason,
                                  "handles_left": [bool(handle) for private, _, _, requests in cuda_aware._ABANDONED
                                                   for handle in (private, *requests)]})
    if rank == 0:
        print(json.dumps(rows), flush=True)
""")


def decisions(launch, tmp_path, case, ranks):
    """Every rank's decision after ``hpcrt.init()`` in the job ``case``, in rank order."""
    (tmp_path / "job.py").write_text(JOB)
    result = launch([str(tmp_path / "job.py"), case], ranks=ranks, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["rank"] for row in rows] == list(range(ranks))
    return rows, result


def test_probe_yes_and_a_good_exchange_is_confirmed_on_every_rank(launch, tmp_path):
    rows, _ = decisions(launch, tmp_path, "good", ranks=3)
    for row in rows:
        assert (row["enabled"], row["probed"], row["confirmed"]) == (True, True, True)
        assert row["reason"] == ("probe: a test probe saying 1; confirmed by a device-buffer exchange on every rank, "
                                 "checked value by value")


def test_wrong_numbers_from_one_rank_stage_every_rank(launch, tmp_path):
    rows, _ = decisions(launch, tmp_path, "wrong_numbers_from_rank_0", ranks=3)
    for row in rows:
        assert (row["enabled"], row["probed"], row["confirmed"]) == (False, True, False)
        assert "the device-buffer exchange failed on rank(s) 1 (rank 1: 8 of 8 values received from rank 0 " \
               "were wrong); GPU buffers are staged through pinned host memory" in row["reason"]


def test_probe_yes_on_some_ranks_stages_every_rank_without_an_exchange(launch, tmp_path):
    rows, _ = decisions(launch, tmp_path, "probe_yes_on_rank_0", ranks=2)
    assert (rows[0]["enabled"], rows[0]["probed"], rows[0]["confirmed"]) == (False, True, None)
    assert "but the probe did not say yes on rank(s) 1; GPU buffers are staged" in rows[0]["reason"]
    assert (rows[1]["enabled"], rows[1]["probed"], rows[1]["confirmed"]) == (False, False, None)


def test_an_exchange_that_never_arrives_fails_within_its_bound(launch, tmp_path):
    rows, result = decisions(launch, tmp_path, "rank_0_never_sends", ranks=2)
    for row in rows:
        assert (row["enabled"], row["confirmed"]) == (False, False)
        assert "not delivered within 2 s" in row["reason"]
        # the pending receive was cancelled, the communicator and requests freed: MPI_Finalize waits on none
        assert row["handles_left"] == [False] * 3, row["handles_left"]
    assert result.seconds >= 2.0  # the exchange waited its bound (the launch's timeout bounds it from above)


def test_a_check_that_raises_on_one_rank_stages_every_rank(launch, tmp_path):
    rows, _ = decisions(launch, tmp_path, "rank_1_check_raises", ranks=2)
    for row in rows:
        assert (row["enabled"], row["confirmed"]) == (False, False)
        assert "failed on rank(s) 1 (rank 1: FileNotFoundError: [Errno 2] No such file or directory: " \
               "'/nonexistent/hpcrt-check')" in row["reason"], row["reason"]


def test_a_child_check_that_crashes_stages_every_rank(launch, tmp_path):
    rows, _ = decisions(launch, tmp_path, "rank_1_child_crashes", ranks=2)
    for row in rows:
        assert (row["enabled"], row["confirmed"]) == (False, False)
        assert "failed on rank(s) 1 (rank 1: the check in a child process was killed by SIGSEGV" in row["reason"]


def test_the_check_reports_a_crash_a_hang_and_a_failure():
    assert cuda_aware.run_check([sys.executable, "-c", "pass"], 30) is None
    crash = cuda_aware.run_check([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], 30)
    assert crash.startswith("the check in a child process was killed by SIGSEGV")
    unnamed = signal.SIGRTMIN + 1  # a real-time signal: no name in signal.Signals
    assert cuda_aware.run_check([sys.executable, "-c", f"import os; os.kill(os.getpid(), {unnamed})"], 30) \
        .startswith(f"the check in a child process was killed by signal {unnamed} (")
    assert cuda_aware.run_check([sys.executable, "-c", "import time; time.sleep(30)"], 0.5) == \
        "the check in a child process did not finish within 0.5 s"
    assert cuda_aware.run_check([sys.executable, "-c", "print('7 values wrong'); raise SystemExit(1)"], 30) == \
        "the check in a child process failed with exit status 1: 7 values wrong"


def test_the_child_exchanges_fake_gpu_buffers_with_itself_under_a_launcher(monkeypatch):
    """The child starts a singleton MPI process even when the parent's environment names a launcher."""
    monkeypatch.setenv("PMI_RANK", "3")
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setenv("PMI_FD", "999")
    assert cuda_aware.isolated_self_exchange(None) is None


@pytest.mark.parametrize("setting, enabled", [("yes", True), ("no", False)])
def test_an_explicit_setting_asks_no_probe(setting, enabled):
    decision = cuda_aware.decide_cuda_aware(setting, probe=(True, "never read"))
    assert (decision.enabled, decision.probed, decision.confirmed) == (enabled, None, None)


def test_auto_keeps_the_probe_answer():
    assert cuda_aware.decide_cuda_aware("auto", probe=(False, "says 0")).probed is False
    assert cuda_aware.decide_cuda_aware("auto", probe=(None, "no symbol")).probed is None
    assert cuda_aware.decide_cuda_aware("auto", probe=(True, "says 1")).probed is True
