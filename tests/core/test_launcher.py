"""Launcher detection, and the launcher/MPI mismatch that makes N singletons of an N-task job."""

import pytest

from hpcrt import LaunchMismatchError
from hpcrt.core.launcher import LaunchInfo, check_world_matches, read_launch_env


@pytest.mark.parametrize("env, size, local", [
    ({}, None, None),
    ({"PMI_SIZE": "4", "PMI_RANK": "2", "MPI_LOCALRANKID": "1"}, 4, 1),
    ({"OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "3"}, 8, 3),
    ({"SLURM_STEP_NUM_TASKS": "16", "SLURM_LOCALID": "5"}, 16, 5),
    # mpiexec inside a Slurm allocation: the innermost launcher's size wins
    ({"SLURM_STEP_NUM_TASKS": "1", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "SLURM_LOCALID": "0"}, 4, 0),
])
def test_read_launch_env(env, size, local):
    info = read_launch_env(env)
    assert (info.world_size, info.local_rank) == (size, local)


@pytest.mark.parametrize("launched, world, refused", [
    (4, 4, False), (None, 1, False), (None, 7, False), (4, 3, True), (4, 8, True), (1, 2, True),
])
def test_only_a_world_of_the_launched_size_passes(launched, world, refused):
    info = LaunchInfo("x" if launched else None, launched, 0 if launched else None)
    if not refused:
        assert check_world_matches(info, world, "MPICH") is None
        return
    with pytest.raises(LaunchMismatchError, match=f"x started {launched} tasks but MPI \\(MPICH\\) reports a world of "
                       f"{world} rank\\(s\\): the launcher's environment and the MPI library disagree"):
        check_world_matches(info, world, "MPICH")


def test_singleton_world_names_the_likely_cause():
    with pytest.raises(LaunchMismatchError, match=r"started 4 tasks but MPI \(MPICH 5\) reports a world of 1.*"
                       r"singleton.*do not match"):
        check_world_matches(LaunchInfo("Open MPI mpirun", 4, 0), 1, "MPICH 5\nmore")


def test_real_singletons_under_a_foreign_launcher_fail_clearly(launch):
    """Open MPI's mpirun environment around the MPICH library: each process is a singleton."""
    script = "import hpcrt; hpcrt.init({'log_files': False}); print('initialized')"
    for rank in range(2):
        result = launch(["-c", script], env={"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": str(rank),
                                             "OMPI_COMM_WORLD_LOCAL_RANK": str(rank)})
        assert result.returncode != 0
        assert "initialized" not in result.stdout
        assert "LaunchMismatchError: Open MPI mpirun started 2 tasks but MPI" in result.stderr
        assert "singleton" in result.stderr
