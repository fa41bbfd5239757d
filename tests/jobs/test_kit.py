"""The kit for one's own Hydra jobs (``hpcrt.jobs.main``), run for real under mpiexec: the example in
docs/examples/ sums across 2 ranks into one shared run directory; its user mistakes are one line and
exit 2; a crash on one rank aborts the job with that rank's report, once, kept in its log file."""

import json
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = str(Path(__file__).resolve().parents[2] / "docs" / "examples" / "allreduce_job.py")
USER_JOB = '''
import hpcrt
import hpcrt.jobs


@hpcrt.jobs.main(config_path=".", config_name="job")
def main(cfg):
    runtime = hpcrt.get_runtime()
    if runtime.rank == cfg.fail_rank:
        if cfg.how == "crash":
            raise RuntimeError("a bug on purpose")
        raise hpcrt.ConfigError("this rank's own file is bad")
    runtime.comm.Barrier()


if __name__ == "__main__":
    main()
'''
USER_CONFIG = "defaults:\n  - hydra_mpi\n  - runtime: default\n  - _self_\nfail_rank: 1\nhow: crash\n"


def test_the_example_sums_across_two_ranks_into_one_shared_run_directory(launch, tmp_path):
    result = launch([EXAMPLE, "example.count=8"], ranks=2, timeout=90, env={"HPCRT_LOG_FILES": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    runs = list((tmp_path / "hpcrt-runs" / "allreduce_job").iterdir())
    assert len(runs) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["hpcrt-runs"]  # no outputs/
    run = runs[0]
    expected = float(np.sum(np.arange(1, 3)))  # every rank contributes rank + 1
    result_file = json.loads((run / "result.json").read_text())
    assert result_file == {"ranks": 2, "count": 8, "first": expected, "last": expected}
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob(".hydra")] == [run.relative_to(tmp_path) / ".hydra"]
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["rank-00000.log", "rank-00001.log"]
    assert result.stdout.count("sum over 2 ranks: 3.0 in each of 8 elements") == 1


@pytest.mark.parametrize("override, said", [
    ("example.count=0", "allreduce_job: example config key 'count': expected an integer >= 1, got 0"),
    ("example.cout=3", "allreduce_job: config key 'example.cout' (from example.cout=3) is unknown; known keys of "
                       "'example': algorithm, count"),
    ("runtime.topology_file=nope.yaml", "allreduce_job: topology file nope.yaml: cannot be read"),
])
def test_the_examples_user_mistakes_are_one_line_and_exit_2(launch, override, said):
    result = launch([EXAMPLE, override], ranks=2, timeout=90)
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(said), result.stdout + result.stderr


def _user_job(tmp_path: Path) -> str:
    (tmp_path / "job.yaml").write_text(USER_CONFIG)
    (tmp_path / "user_job.py").write_text(USER_JOB)
    return str(tmp_path / "user_job.py")


def test_a_crash_on_one_rank_aborts_with_its_report_once_and_in_its_log(launch, tmp_path):
    run = tmp_path / "run"
    result = launch([_user_job(tmp_path), f"hydra.run.dir={run}"], ranks=2, timeout=90, env={"HPCRT_LOG_FILES": "1"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("aborting the whole job") == 1, result.stderr
    assert result.stderr.count("RuntimeError: a bug on purpose") == 1, result.stderr
    assert "hpcrt [rank 1 of 2 on " in result.stderr
    log = (run / "logs" / "rank-00001.log").read_text()
    assert "exited with status 1; aborting the whole job" in log and "RuntimeError: a bug on purpose" in log


def test_a_mistake_only_one_rank_finds_aborts_with_2_naming_the_rank(launch, tmp_path):
    result = launch([_user_job(tmp_path), "how=mistake"], ranks=2, timeout=90)
    assert result.returncode == 2, result.stdout + result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("job")]
    assert said == ["job [rank 1 of 2]: this rank's own file is bad"], result.stderr
    assert "Traceback" not in result.stderr


def test_a_crash_without_the_abort_hook_still_ends_every_rank_with_its_traceback(launch, tmp_path):
    result = launch([_user_job(tmp_path)], ranks=2, timeout=90, env={"HPCRT_ABORT_ON_ERROR": "0"})
    assert result.returncode != 0, result.stdout + result.stderr
    assert result.stderr.count("RuntimeError: a bug on purpose") == 1, result.stderr
