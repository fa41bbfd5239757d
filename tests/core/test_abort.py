"""The abort hook: one rank's uncaught exception or non-zero exit ends the whole job within seconds,
naming the rank and showing its traceback, while the other ranks wait in a collective."""

import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import sys, time
    import hpcrt
    rt = hpcrt.init({{"log_files": False}})
    if rt.rank == 1:
        time.sleep(0.5)
        {failure}
    rt.comm.Barrier()   # the other ranks would wait here forever without the hook
    print("rank", rt.rank, "passed the barrier", flush=True)
""")

FAILURES = {
    "exception": ("raise ValueError('bad shard on rank one')", "died of an uncaught ValueError",
                  "ValueError: bad shard on rank one"),
    "sys.exit": ("sys.exit(3)", "exited with status 3", None),
    "exit-in-handler": (
        "try:\n        1 / 0\n    except ZeroDivisionError:\n        sys.exit(1)",
        "exited with status 1", "ZeroDivisionError: division by zero"),
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_failing_rank_aborts_the_job(launch, tmp_path, kind):
    failure, headline, detail = FAILURES[kind]
    script = tmp_path / "job.py"
    script.write_text(PROGRAM.format(failure=failure))
    result = launch([str(script)], ranks=3, timeout=60)
    assert result.returncode != 0
    assert result.seconds < 20, f"the job took {result.seconds:.1f}s to end"
    assert "passed the barrier" not in result.stdout
    assert "hpcrt [rank 1 of 3 on" in result.stderr and headline in result.stderr, result.stderr
    assert "aborting the whole job" in result.stderr
    if detail:
        assert detail in result.stderr and "Traceback" in result.stderr
        assert 'job.py", line' in result.stderr  # the failing rank's own frame


def test_clean_exit_does_not_abort(launch, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(PROGRAM.format(failure="pass").replace("if rt.rank == 1", "if rt.rank == 1 and False")
                      + "sys.exit(0)\n")
    result = launch([str(script)], ranks=2, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("passed the barrier") == 2


HYDRA_APP = textwrap.dedent("""
    import hydra
    import hpcrt

    @hydra.main(version_base=None)
    def main(cfg):
        rt = hpcrt.init({"log_files": False})
        if rt.rank == 1:
            raise RuntimeError("optimizer state diverged")
        rt.comm.Barrier()
        print("rank", rt.rank, "passed the barrier", flush=True)

    main()
""")


def test_hydra_app_exception_aborts_the_job(launch, tmp_path):
    """Hydra turns the exception into sys.exit(1); the hook still takes the job down, with the traceback."""
    script = tmp_path / "app.py"
    script.write_text(HYDRA_APP)
    result = launch([str(script), "hydra.run.dir=.", "hydra.output_subdir=null"], ranks=3, timeout=60)
    assert result.returncode != 0 and result.seconds < 20
    assert "passed the barrier" not in result.stdout
    assert "hpcrt [rank 1 of 3 on" in result.stderr and "exited with status 1" in result.stderr
    assert "RuntimeError: optimizer state diverged" in result.stderr


SCAN_OP_FAILS = textwrap.dedent("""
    import numpy as np
    import hpcrt
    from hpcrt.collectives import ScanOp, all_scan
    rt = hpcrt.init({"log_files": False})

    def combine(lower, upper):
        if rt.rank == 1 and lower[0, 0] > 3:  # rank 1 fails on a later block, after forwarding the first ones
            raise FloatingPointError("the op overflowed on rank one")
        return lower + upper

    rows = np.arange(8, dtype=float)[:, None] * np.ones((8, 4))
    all_scan(rows, ScanOp(combine, np.zeros_like, "checked sum", rowwise=True), algorithm="pipeline", blocks=8)
    print("rank", rt.rank, "finished the scan", flush=True)
""")


def test_op_failing_mid_pipeline_aborts_the_job(launch, tmp_path):
    """Rank 1's op raises after it has forwarded some blocks: ranks 2 and 3 wait for the rest, which
    never come, until the abort hook ends the job, naming rank 1 and the op's error."""
    script = tmp_path / "scan.py"
    script.write_text(SCAN_OP_FAILS)
    result = launch([str(script)], ranks=4, timeout=60)
    assert result.returncode != 0
    assert result.seconds < 20, f"the job took {result.seconds:.1f}s to end"
    assert "rank 3 finished the scan" not in result.stdout and "rank 2 finished the scan" not in result.stdout
    assert "hpcrt [rank 1 of 4 on" in result.stderr and "FloatingPointError: the op overflowed" in result.stderr
