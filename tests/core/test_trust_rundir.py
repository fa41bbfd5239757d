"""Run directories never collide: jobs started in the same second get their own directory, while a
Slurm job (and each array task) finds its own again when it is requeued."""

import pytest

from hpcrt.core.rundir import agree_run_dir, create_run_dir
from hpcrt.jobs.hydra_mpi import with_run_dir

NOW = 1_700_000_000.0
SLURM = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


def test_same_second_gets_a_suffix_and_slurm_reuses_its_own(tmp_path):
    first, second, third = (create_run_dir(tmp_path, {}, now=NOW) for _ in range(3))
    assert second.name == f"{first.name}-1" and third.name == f"{first.name}-2"
    requeued = {"SLURM_JOB_ID": "4242"}
    assert create_run_dir(tmp_path, requeued) == create_run_dir(tmp_path, requeued) == tmp_path / "slurm-4242"
    task = {"SLURM_JOB_ID": "4250", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7"}
    assert create_run_dir(tmp_path, task) == tmp_path / "slurm-4242_7"


def test_two_hydra_jobs_started_together_get_two_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in SLURM:
        monkeypatch.delenv(name, raising=False)

    class RankZero:
        rank = 0

        def bcast(self, value, root=0):
            return value

    first, second = (with_run_dir([], RankZero(), "bench")[0] for _ in range(2))
    assert first != second and first.startswith("hydra.run.dir=")


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_every_rank_agrees_on_each_of_two_fresh_directories(comm, mpi_tmp_path):
    first, second = (agree_run_dir(comm, None, environ={}, root=mpi_tmp_path / "runs") for _ in range(2))
    assert first != second and first.is_dir() and second.is_dir()
    assert comm.allgather((first, second)) == [(first, second)] * comm.size
