"""The batch templates under a real Slurm (started by slurm/start-local-cluster.sh; skipped without
one, except in CI, which starts it): each as shipped, and the training job's signal → checkpoint
→ requeue → resume round trip."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from conftest import require_tool

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.vocab=11", "model.d_model=8", "model.d_k=3", "model.d_v=2", "model.d_ff=12", "model.dtype=float64",
        "train.batch=4", "train.seq_len=12", "train.steps=150", "checkpoint.every=1000", "train.log_every=1000"]
SLOW = {"HPCRT_FAULT": "delay:rank=0,step=0,ms=40"}
"""Steps slow enough (40 ms each) that the signal comes while the job runs."""


@pytest.fixture(autouse=True, scope="module")
def slurm_cluster() -> None:
    """Every test here needs a Slurm cluster up."""
    how = "run slurm/start-local-cluster.sh as root (it installs Debian's slurm-wlm and munge)"
    require_tool("sbatch", how)
    require_tool("sinfo", how, probe=["-h"])


def sbatch(tmp_path: Path, *args: str, timeout: float = 180) -> str:
    """Submit a template, wait for it, return its output file's text."""
    out = tmp_path / "job.out"
    result = subprocess.run(["sbatch", "--wait", f"--output={out}", *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    text = out.read_text() if out.exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + text
    return text


def test_info_template_with_sample_topology(tmp_path):
    text = sbatch(tmp_path, "-n", "4", str(REPO / "slurm" / "info.sbatch"), "--topology", "two_nodes_mixed_nic")
    assert "4 on 2 node(s): node-ib, node-roce" in text
    assert "launcher         : a PMI launcher" in text


def test_wrong_pmi_plugin_is_named(tmp_path):
    out = tmp_path / "job.out"
    result = subprocess.run(["sbatch", "--wait", "-n", "2", f"--output={out}",
                             str(REPO / "slurm" / "info.sbatch")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "HPCRT_SRUN_MPI": "none"})
    assert result.returncode != 0
    assert "Slurm srun started 2 tasks but MPI" in out.read_text()


def _submit(tmp_path: Path, template: str, *args: str) -> str:
    """Submit a template as shipped, its steps slowed; its job id."""
    done = subprocess.run(["sbatch", "--parsable", str(REPO / "slurm" / template), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env={**os.environ, **SLOW})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().split(";")[0]


def _until(found: Callable[[], bool], seconds: float, what: str, job: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + seconds
    while not found():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job], timeout=30)
            outputs = "".join(p.read_text() for p in tmp_path.glob("*.out"))
            pytest.fail(f"job {job}: {what} did not happen within {seconds} s\n{outputs[-4000:]}")
        time.sleep(0.5)


def _state(job: str) -> str:
    """The job's state (PENDING, RUNNING, ...), or "" once Slurm has forgotten it."""
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True,
                          timeout=30).stdout.strip()


def _steps(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def _record(run: Path) -> dict:
    path = run / "stop.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_train_template_stops_on_the_warning_requeues_itself_and_resumes_bit_identical(tmp_path, launch):
    job = _submit(tmp_path, "train.sbatch", *TINY)
    run = tmp_path / "hpcrt-runs" / "train" / f"slurm-{job}"
    _until(lambda: _steps(run) >= 5, 120, "step 5", job, tmp_path)
    subprocess.run(["scancel", "--signal=USR2", "--full", job], check=True, timeout=30)
    _until(lambda: _record(run).get("requeued") is True and _state(job) == "PENDING", 90, "the requeue", job, tmp_path)
    stopped = _record(run)["step"]
    assert stopped >= 5 and (run / "checkpoints" / f"step-{stopped:09d}").is_dir()
    # Slurm holds a requeued job back for about two minutes before it may start again: release it.
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True, timeout=30)
    _until(lambda: _state(job) == "", 180, "the resumed job's end", job, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] == stopped and summary["restart_count"] == 1 and summary["steps"] == 150
    assert _record(run)["reason"] == "done"
    whole = launch(["-m", "hpcrt.jobs.train", f"hydra.run.dir={tmp_path / 'whole'}", *TINY], ranks=2, timeout=120)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert summary["params_digest"] == json.loads((tmp_path / "whole" / "summary.json").read_text())["params_digest"]
    output = (tmp_path / f"hpcrt-train-{job}.out").read_text()
    assert "restart 0" in output and "restart 1" in output and "requeued as job" in output


def test_mpiexec_template_forwards_the_warning_and_the_requeue_cap_ends_the_job(tmp_path):
    job = _submit(tmp_path, "train-mpiexec.sbatch", *TINY, "slurm.max_requeues=0")
    run = tmp_path / "hpcrt-runs" / "train" / f"slurm-{job}"
    _until(lambda: _steps(run) >= 5, 120, "step 5", job, tmp_path)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=30)  # what B:USR1 sends
    _until(lambda: _state(job) == "", 120, "the job's end", job, tmp_path)
    record = _record(run)
    assert record["reason"] == "SIGUSR1" and record["requeued"] is False, record
    assert "requeue cap is reached" in record["why"]
    assert (run / "checkpoints" / f"step-{record['step']:09d}").is_dir()
    assert "forwarding USR1 to mpiexec" in (tmp_path / f"hpcrt-train-{job}.out").read_text()


def test_a_plain_scancel_stops_with_the_checkpoint_committed_and_no_requeue(tmp_path):
    job = _submit(tmp_path, "train.sbatch", *TINY)
    run = tmp_path / "hpcrt-runs" / "train" / f"slurm-{job}"
    _until(lambda: _steps(run) >= 5, 120, "step 5", job, tmp_path)
    subprocess.run(["scancel", job], check=True, timeout=30)  # SIGTERM to the steps and the batch shell
    _until(lambda: _state(job) == "", 120, "the job's end", job, tmp_path)
    record = _record(run)
    assert record["reason"] == "SIGTERM" and record["requeued"] is False, record
    assert record["why"] == "SIGTERM ends the job for good"
    assert (run / "checkpoints" / f"step-{record['step']:09d}").is_dir()


def test_bench_template_runs_as_shipped(tmp_path):
    text = sbatch(tmp_path, str(REPO / "slurm" / "bench.sbatch"), "bench.collectives=[allreduce]",
                  "bench.max_bytes=64", "bench.link_costs=nominal")
    assert "# Out of bounds values : 0 OK" in text
    assert list((tmp_path / "hpcrt-runs" / "bench").glob("slurm-*/results.csv"))


def test_a_multirun_through_the_submitit_launcher_runs_each_point_as_one_mpi_world(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='pip install "hpcrt[slurm]"')
    sweep = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "-m", "hpcrt.jobs.train", "-m", "hydra/launcher=hpcrt_slurm",
                           f"hydra.sweep.dir={sweep}", *TINY, "train.steps=20", "parallel.sp=2",
                           "parallel.scan=pipeline,allgather"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    points = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in points] == ["0", "1"]
    summaries = [json.loads((p / "summary.json").read_text()) for p in points]
    assert [s["layout"]["scan"] for s in summaries] == ["pipeline", "allgather"]
    assert all(s["layout"]["ranks"] == 2 and s["layout"]["sp"] == 2 and s["steps"] == 20 for s in summaries)
    assert summaries[0]["slurm_job"] != summaries[1]["slurm_job"]  # one array task each
    assert all((p / ".hydra" / "config.yaml").is_file() for p in points)
