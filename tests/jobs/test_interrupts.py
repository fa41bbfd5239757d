"""Ctrl-C on a bench job under mpiexec: every rank stops after the same row, rank 0 says where the
rows are in one line, the job exits with 130, and results.csv and results.json hold every row
measured so far (read back by this process)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

from conftest import _mpiexec

SLOW = ["bench.collectives=[allreduce]", "bench.iters=300", "bench.iters_large=50", "bench.max_bytes=4194304",
        "bench.link_costs=nominal"]
"""Minutes of rows on a shared machine: the signal always lands mid-run."""


def test_ctrl_c_stops_every_rank_with_130_and_keeps_the_rows_measured(tmp_path):
    run = tmp_path / "run"
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "hpcrt.jobs.bench", f"hydra.run.dir={run}", *SLOW]
    job = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "HPCRT_LOG_FILES": "1"})
    try:
        deadline = time.monotonic() + 120
        while not ((run / "results.csv").exists() and len((run / "results.csv").read_text().splitlines()) >= 3):
            assert job.poll() is None and time.monotonic() < deadline, "the job ended or stalled before the signal"
            time.sleep(0.1)
        job.send_signal(signal.SIGINT)  # what Ctrl-C on mpiexec's terminal sends
        out, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 130, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("bench:")]
    assert said == [f"bench: stopped by SIGINT; the rows measured are in {run / 'results.csv'} and results.json"], err
    assert "Traceback" not in err and "Out of bounds" not in out, err
    rows = list(csv.DictReader(open(run / "results.csv")))
    document = json.loads((run / "results.json").read_text())
    printed = [line for line in out.splitlines() if line.strip() and not line.startswith(("#", "[mpiexec@"))]
    assert 2 <= len(rows) == len(document["rows"]) == len(printed) < 48, (len(rows), out)
    assert [r["size_bytes"] for r in rows] == [str(r["size_bytes"]) for r in document["rows"]]
    assert document["metadata"]["stopped"] == "SIGINT"
    assert all(r["wrong_elements"] == "0" for r in rows)
    assert not (run / "bench.png").exists()
