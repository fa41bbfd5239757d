"""User mistakes end a job in one line, said once by rank 0, every rank exiting with 2, the
traceback kept in the ranks' log files (and on the console with log_level DEBUG): a missing or
wrong-sized topology file, an override Hydra refuses, a launcher whose tasks are singletons —
for ``hpcrt info``, the bench job and the train job."""

import pytest

BENCH = ["-m", "hpcrt.jobs.bench", "bench.collectives=[allreduce]", "bench.max_bytes=8"]
TRAIN = ["-m", "hpcrt.jobs.train", "train.steps=2"]
INFO = ["-m", "hpcrt", "info"]
SHIPPED = "two_nodes_emulated, two_nodes_gcd_pairs, two_nodes_interleaved, two_nodes_mixed_nic"


def _one_line(result, prefix: str) -> str:
    """The single line the job printed (stdout and stderr together), which starts with ``prefix``."""
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stdout + result.stderr
    return lines[0]


@pytest.mark.parametrize("args, said", [
    ([*BENCH, "runtime.topology_file=nope.yaml"],
     f"bench: topology file nope.yaml: cannot be read: No such file or directory; expected a path or the name of a "
     f"shipped topology: {SHIPPED}"),
    ([*TRAIN, "runtime.topology_file=nope.yaml"], "train: topology file nope.yaml: cannot be read"),
    ([*INFO, "--topology", "two_nodes_mixed_nic"], "hpcrt info: topology file "),
    ([*BENCH, "bench.iter=5"], "bench: config key 'bench.iter' (from bench.iter=5) is unknown; known keys of "
                               "'bench': algorithms, arg_check, buffers, collectives, dtype, factor, iters, "),
    ([*TRAIN, "train.stepz=5"], "train: config key 'train.stepz' (from train.stepz=5) is unknown; known keys of"),
    ([*BENCH, "runtime.log_files=maybe"], "bench: Error merging override runtime.log_files=maybe; Value 'maybe' "
                                          "is not a valid bool"),
    ([*BENCH, "hydra/launcher=nope"], "bench: In 'hydra/config': Could not find 'hydra/launcher/nope'; Available "
                                      "options in 'hydra/launcher': basic, "),
    ([*BENCH, "bench.dtype=float16"], "bench: bench config key 'dtype': expected one of float32, float64"),
])
def test_a_user_mistake_is_one_line_from_rank_0_and_exit_2_on_every_rank(launch, args, said):
    line = _one_line(launch(args, ranks=2, timeout=90), said.split(":")[0])
    assert line.startswith(said), line


def test_a_topology_for_another_rank_count_says_how_many_ranks_it_needs(launch):
    line = _one_line(launch([*INFO, "--topology", "two_nodes_mixed_nic"], ranks=2, timeout=60), "hpcrt info:")
    assert line.endswith("expected the nodes' ranks to cover exactly ranks 0..1 of this 2-rank job; run it on 4 "
                         "ranks, got '4 rank(s): [0, 1, 2, 3]'"), line


def test_the_traceback_goes_to_every_rank_log_and_to_the_console_only_with_debug(launch, tmp_path):
    run = tmp_path / "run"
    quiet = launch([*BENCH, f"hydra.run.dir={run}", "runtime.topology_file=nope.yaml"], ranks=2, timeout=90,
                   env={"HPCRT_LOG_FILES": "1"})
    _one_line(quiet, "bench: topology file nope.yaml")
    for rank in (0, 1):
        log = (run / "logs" / f"rank-0000{rank}.log").read_text()
        assert log.startswith("Traceback") and "TopologyFileError: topology file nope.yaml" in log, log
    loud = launch([*BENCH, "runtime.topology_file=nope.yaml", "runtime.log_level=DEBUG"], ranks=2, timeout=90)
    assert loud.returncode == 2 and loud.stderr.count("Traceback (most recent call last)") == 1, loud.stderr
    assert loud.stderr.rstrip().splitlines()[-1].startswith("bench: topology file nope.yaml"), loud.stderr


def test_singletons_of_a_foreign_launcher_say_the_mismatch_once(launch):
    """Open MPI's mpirun environment around the MPICH library: each task is a singleton of rank 0;
    the launcher's rank decides who speaks."""
    said = []
    for rank in range(2):
        result = launch(INFO, env={"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": str(rank),
                                   "OMPI_COMM_WORLD_LOCAL_RANK": str(rank)}, timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        said.append([line for line in result.stderr.splitlines() if line.startswith("hpcrt info:")])
    assert len(said[0]) == 1 and said[1] == [], said
    assert said[0][0].startswith("hpcrt info: Open MPI mpirun started 2 tasks but MPI (MPICH"), said
