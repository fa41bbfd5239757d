"""Bad settings stop real jobs with the setting named, never run on ignoring it: a key added to a
Hydra app's config with ``+key=``, a mistyped ``HPCRT_*`` variable, a fault on a rank the job lacks."""

from pathlib import Path

import pytest

TRAIN_LOOP = str(Path(__file__).parent.parent / "monitor" / "cases" / "train_loop.py")
TINY = ["bench.collectives=[allreduce]", "bench.algorithms.allreduce=[mpi4py]", "bench.max_bytes=8",
        "bench.iters=1", "bench.warmup=0", "bench.link_costs=nominal"]


@pytest.mark.parametrize("added, key, ranks", [("+bench.iter=5", "bench.iter", 2), ("++benhc.iters=5", "benhc", 1)])
def test_hydra_key_the_config_lacks_is_refused(launch, added, key, ranks):
    result = launch(["-m", "hpcrt.jobs.bench", *TINY, added], ranks=ranks, timeout=90)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count(f"bench: config key '{key}' (from {added}) is unknown") == 1, result.stderr
    assert "Traceback" not in result.stderr and "Out of bounds" not in result.stdout


def test_hydra_force_add_of_a_key_the_config_has_still_runs(launch):
    result = launch(["-m", "hpcrt.jobs.bench", *TINY, "++bench.iters=2"], ranks=1, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mistyped_variable_stops_the_job(launch, tmp_path):
    result = launch(["-c", "import hpcrt; hpcrt.init()"], ranks=2, timeout=60,
                    env={"HPCRT_LOG_FILE": "0"})
    assert result.returncode != 0
    assert "HPCRT_LOG_FILE is unknown: did you mean HPCRT_LOG_FILES?" in result.stderr, result.stderr


def test_fault_on_a_rank_the_job_lacks_stops_the_job(launch, tmp_path):
    result = launch([TRAIN_LOOP, "--run-dir", str(tmp_path / "run"), "--steps", "5"], ranks=2, timeout=60,
                    env={"HPCRT_FAULT": "kill:rank=2,step=3"})
    assert result.returncode != 0
    assert "names rank 2, but the job has ranks 0..1" in result.stderr, result.stderr
