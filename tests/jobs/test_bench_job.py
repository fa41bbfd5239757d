"""The bench job run for real under mpiexec (one shared run directory, CSV/JSON/PNG, zero wrong
elements, multirun subdirectories), its config checks, and the cost model's ping-pong."""

import csv
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import hpcrt
from hpcrt import ConfigError, LinkCost
from hpcrt.collectives import ScanLinks
from hpcrt.collectives.costmodel.calibration import measure_call_costs, measure_pipeline_block
from hpcrt.costmodel.links import (fit_link_cost, measure_link_costs, measure_schedule_costs, representative_pairs,
                                   ring_shift, shared_core_hops, token_pass)
from hpcrt.costmodel.model import bottleneck_link
from hpcrt.costmodel.table import CostTable
from hpcrt.jobs.bench.cases import COLLECTIVES, KNOWN_OPS
from hpcrt.jobs.bench.config import message_sizes, parse_settings
from hpcrt.jobs.bench.report import Row, format_row, prediction_misses, summary
from hpcrt.jobs.bench.run import count_wrong, time_calls
from hpcrt.jobs.hydra_mpi import with_run_dir
from hpcrt.topology.table import Device
from hpcrt.topology.yaml_file import load_topology_file

from conftest import SAMPLE_TOPOLOGY

TINY = ["bench.min_bytes=8", "bench.max_bytes=512", "bench.factor=8", "bench.iters=1", "bench.warmup=0"]
"""Sizes 8, 64 and 512 B, one timed call each, no warm-up: seconds per run, all of it checked."""
SCAN_CALLS = {"all_scan/mpi", "all_scan/mpi_user", "all_scan/pipeline", "all_scan/allgather"}
MEASURED = {"chain", "shift", "pipeline_block", "call_allreduce/mpi", "call_all_scan/mpi_round",
            "call_all_scan/mpi_round_large", *(f"call_{name}" for name in SCAN_CALLS)}
RING_STEPS = {"ring_step_ring", "ring_step_bidir_ring"}
KNOWN_ALGORITHMS = {name: tuple(c.algorithms) for name, c in COLLECTIVES.items()}


def _only_dir(root: Path) -> Path:
    dirs = list(root.iterdir())
    assert len(dirs) == 1, f"expected one run directory under {root}, found {dirs}"
    return dirs[0]


def _check_outputs(job_dir: Path, ranks: int, collectives: set) -> list:
    """CSV, JSON and PNG are there, agree, cover every collective and have no wrong element."""
    rows = list(csv.DictReader(open(job_dir / "results.csv")))
    document = json.loads((job_dir / "results.json").read_text())
    assert (job_dir / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(document["rows"]) == len(rows) > 0
    assert {r["collective"] for r in rows} == collectives
    assert all(r["wrong_elements"] == "0" for r in rows), [r for r in rows if r["wrong_elements"] != "0"]
    assert all(float(r["time_avg_us"]) > 0 for r in rows)
    meta = document["metadata"]
    assert meta["ranks"] == ranks and "MPICH" in meta["mpi_library"] and "hpcrt.jobs.bench" in meta["command_line"]
    assert meta["hpcrt"] == hpcrt.__version__ and _in_this_clone(meta["git_commit"]) and meta["stopped"] is None
    assert list(rows[0])[:12] == ["collective", "algorithm", "op", "dtype", "size_bytes", "count_elements",
                                  "time_avg_us", "time_min_us", "time_max_us", "algbw_gbytes_s", "busbw_gbytes_s",
                                  "wrong_elements"]
    for r in rows:  # nccl-tests' in-place columns: allreduce has an in-place form (MPI_IN_PLACE, out=), no other
        in_place = (r["time_in_place_us"], r["wrong_in_place_elements"])
        assert (float(in_place[0]) > 0 and in_place[1] == "0") if r["collective"] == "allreduce" else \
            in_place == ("", ""), r
    # nccl-tests' definitions, written here: algbw = bytes / time, busbw = algbw x the collective's factor
    bus_factor = {"allreduce": 2 * (ranks - 1) / ranks, "allgather": (ranks - 1) / ranks,
                  "reduce_scatter": (ranks - 1) / ranks}
    for r in rows:
        algbw = float(r["algbw_gbytes_s"])
        assert algbw == pytest.approx(int(r["size_bytes"]) / float(r["time_avg_us"]) / 1e3, rel=0.01, abs=2e-3), r
        if r["collective"] in bus_factor:
            assert float(r["busbw_gbytes_s"]) == pytest.approx(algbw * bus_factor[r["collective"]], rel=0.01,
                                                               abs=2e-3), r
    mean = sum(float(r["busbw_gbytes_s"]) for r in rows) / len(rows)
    assert document["summary"][-1] == f"Avg bus bandwidth    : {mean:.3f}"
    cores = len(os.sched_getaffinity(0))  # every rank of these tests runs on this host, on these cores
    assert meta["cores"] == cores
    assert meta["warnings"] == ([f"WARNING: {ranks} ranks share {cores} core(s) on this host: times include waiting "
                                 f"for a core and ratios between algorithms are not what a machine with a core per "
                                 f"rank gives"] if ranks > cores else [])
    return rows


def _in_this_clone(commit: str) -> bool:
    """Whether ``commit`` is this checkout's HEAD or an ancestor (HEAD may move on while a job runs)."""
    return len(commit) == 40 and subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"],
                                                cwd=Path(__file__).parent).returncode == 0


def test_two_ranks_share_one_run_dir_and_check_every_algorithm(launch, tmp_path):
    result = launch(["-m", "hpcrt.jobs.bench", *TINY], ranks=2, timeout=150, env={"HPCRT_LOG_FILES": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = _only_dir(tmp_path / "hpcrt-runs" / "bench")
    rows = _check_outputs(run_dir, 2, set(COLLECTIVES))
    for name, collective in COLLECTIVES.items():
        algorithms = {r["algorithm"] for r in rows if r["collective"] == name}
        assert algorithms == set(collective.algorithms) - {"auto", "cupy"}, name
    # nccl-tests sizes: allgather and reduce_scatter round to whole blocks per rank; 8 B lse_merge
    # rounds up to one row, so it runs once
    sizes = {(r["collective"], r["algorithm"]): [] for r in rows}
    for r in rows:
        sizes[(r["collective"], r["algorithm"])].append(int(r["size_bytes"]))
    assert sizes[("allreduce", "ring")] == [8, 64, 512]
    assert sizes[("lse_merge", "numba")] == [256, 512]
    assert [p.name for p in tmp_path.rglob(".hydra")] == [".hydra"]
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == ["rank-00000.log", "rank-00001.log"]
    assert "size(B)" in result.stdout and "#wrong" in result.stdout and "predicted(us)" in result.stdout
    assert "allreduce sum ring: time" in result.stdout  # the ratio to MPI's own call
    assert "# Out of bounds values : 0 OK\n# Avg bus bandwidth    : " in result.stdout
    meta = json.loads((run_dir / "results.json").read_text())["metadata"]
    assert set(meta["measured_link_costs"]) >= {"intra"} | MEASURED | RING_STEPS
    assert set(meta["prediction_ring_costs"]["steps"]) == {"ring", "bidir_ring"}
    assert meta["prediction_ring_costs"]["mpi_allreduce"]["alpha_us"] > 0
    assert set(meta["prediction_scan_links"]) == {"chain", "shift", "pipeline_block_us", "call_us", "mpi_rounds"}
    assert len(meta["prediction_scan_links"]["mpi_rounds"]) == 2  # MPI's own scan, timed in two pieces
    assert set(meta["prediction_scan_links"]["call_us"]) == {"mpi", "mpi_user", "pipeline", "allgather"}
    block = meta["measured_link_costs"]["pipeline_block"]
    assert block["alpha_us"] > 0 and block["bandwidth_gbytes_s"] is None


def test_multirun_on_four_ranks_gives_one_subdir_per_point(launch, tmp_path):
    args = ["-m", "hpcrt.jobs.bench", "-m", "bench.iters=1,2", "bench.collectives=[allreduce,all_scan]",
            "bench.max_bytes=64", "bench.warmup=0", f"runtime.topology_file={SAMPLE_TOPOLOGY}"]
    result = launch(args, ranks=4, timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = _only_dir(tmp_path / "hpcrt-runs" / "bench")
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    for num, iters in (("0", "1"), ("1", "2")):
        rows = _check_outputs(sweep / num, 4, {"allreduce", "all_scan"})
        assert {r["timed_calls"] for r in rows} == {iters}
        assert (sweep / num / ".hydra" / "overrides.yaml").exists()
        meta = json.loads((sweep / num / "results.json").read_text())["metadata"]
        assert meta["nodes"] == ["node-ib", "node-roce"]
        assert set(meta["measured_link_costs"]) >= {"intra", "eth"} | MEASURED | RING_STEPS
    assert result.stdout.count("# WARNING: 4 ranks share") == (4 if len(os.sched_getaffinity(0)) < 4 else 0)
    assert len(list(tmp_path.rglob(".hydra"))) == 2
    assert result.stdout.count("Launching 2 jobs locally") == 1  # Hydra's own lines from rank 0 only


def test_wrong_results_are_counted_and_fail_the_job(launch, tmp_path):
    case = Path(__file__).parent / "cases" / "bench_wrong_ring.py"
    result = launch([str(case), "bench.collectives=[allreduce]", "bench.max_bytes=64", *TINY[3:]], ranks=2,
                    timeout=90)
    assert result.returncode != 0
    assert "18 element(s) off the numpy reference" in result.stderr, result.stderr  # 2 + 16 on rank 1
    assert "# Out of bounds values : 18 FAILED" in result.stdout
    rows = list(csv.DictReader(open(_only_dir(tmp_path / "hpcrt-runs" / "bench") / "results.csv")))
    assert {(r["algorithm"], r["size_bytes"]): r["wrong_elements"] for r in rows if r["wrong_elements"] != "0"} == {
        ("ring", "8"): "2", ("ring", "64"): "16"}


def test_bad_config_stops_the_job_with_the_key_named(launch):
    result = launch(["-m", "hpcrt.jobs.bench", "bench.collectives=[allreduce,alltoall]"], ranks=2, timeout=60)
    assert result.returncode != 0
    assert result.stderr.count("bench config key 'collectives': unknown name 'alltoall'") == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


BASE = {"collectives": ["allreduce"], "algorithms": {}, "ops": ["sum"], "min_bytes": 8, "max_bytes": 64,
        "factor": 2, "warmup": 1, "iters": 1, "iters_large": 1, "dtype": "float32", "buffers": "numpy",
        "validate": True, "arg_check": False, "link_costs": "measured", "timing": "loop"}


@pytest.mark.parametrize("change, message", [
    ({"min_bytes": 1024}, "'min_bytes': must not exceed max_bytes"),
    ({"factor": 1}, "'factor': expected an integer >= 2"),
    ({"algorithms": {"allreduce": ["mpi4py", "tree"]}}, "'algorithms.allreduce': unknown name 'tree'"),
    ({"algorithms": {"allscan": "all"}}, "'algorithms.allscan': not a collective"),
    ({"ops": ["prod"]}, "'ops': unknown name 'prod'"),
    ({"dtype": "float16"}, "'dtype': expected one of"),
    ({"buffers": "rocm"}, "'buffers': expected one of"),
    ({"iters": 0}, "'iters': expected an integer >= 1"),
    ({"validate": "yes"}, "'validate': expected true or false"),
    ({"timing": "barrier"}, "'timing': expected one of loop, per_call"),
])
def test_settings_checks_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings({**BASE, **change}, KNOWN_ALGORITHMS, KNOWN_OPS)


def test_sizes_warmup_and_iterations_follow_the_osu_and_nccl_tests_rules():
    assert message_sizes(8, 4 << 20, 8) == (8, 64, 512, 4096, 32768, 262144, 2097152, 4 << 20)
    assert message_sizes(8, 64 << 20, 4)[-3:] == (8 << 20, 32 << 20, 64 << 20)  # the max itself, not 32 MiB
    assert message_sizes(8, 512, 8) == (8, 64, 512)
    settings = parse_settings({**BASE, "warmup": 8, "iters": 50, "iters_large": 5, "max_bytes": 1 << 20},
                              KNOWN_ALGORITHMS, KNOWN_OPS)
    assert settings.sizes == tuple(8 << i for i in range(18))
    assert settings.algorithms == {"allreduce": None}
    sizes = (8, 64 << 10, 128 << 10, 1 << 20)
    assert [settings.warmup_for(n) for n in sizes] == [8, 8, 4, 1]
    assert [settings.iters_for(n) for n in sizes] == [50, 50, 5, 5]


def test_summary_names_what_auto_ran_over_each_run_of_sizes():
    def row(algorithm, size, ran=None, op="sum"):
        return Row("all_scan", algorithm, op, "float32", size, size // 4, 10.0, 9.0, 11.0, 1.0, 1.0, 0, 5.0, 1, 1, ran)
    rows = [row("mpi4py", s) for s in (8, 64, 512, 4096)]
    rows += [row("auto", 8, "mpi"), row("auto", 64, "mpi"), row("auto", 512, "pipeline/4"), row("auto", 4096, "mpi")]
    rows += [row("auto", 8, "pipeline/1", op="affine")]
    lines = summary(rows, "mpi4py")
    assert "# all_scan sum auto ran: mpi at 8-64 B, pipeline/4 at 512 B, mpi at 4096 B" in lines
    assert lines[-2:] == ["# all_scan affine: no mpi4py baseline to compare with",
                          "# all_scan affine auto ran: pipeline/1 at 8 B"]
    assert not any("ran:" in line for line in summary([r for r in rows if r.algorithm == "mpi4py"], "mpi4py"))


def _row(algorithm, size, avg, low, high, predicted=None):
    return Row("allreduce", algorithm, "sum", "float32", size, size // 4, avg, low, high, size / avg / 1e3,
               size / avg / 1e3, 0, predicted, 1, 1)


def test_summary_ratios_name_their_size_with_the_fastest_and_slowest_ranks():
    rows = [_row("mpi4py", 8, 10.0, 8.0, 20.0), _row("mpi4py", 4096, 100.0, 50.0, 200.0),
            _row("ring", 8, 30.0, 16.0, 30.0), _row("ring", 4096, 50.0, 40.0, 100.0)]
    assert summary(rows, "mpi4py") == [
        "# allreduce sum ring: time 3.00x (min 2.00x, max 1.50x) mpi4py at 8 B; "
        "busbw 2.00x (min 1.25x, max 2.00x) mpi4py at 4096 B"]


def test_predictions_off_by_more_than_the_factor_are_flagged_and_counted():
    close, off = _row("ring", 8, 10.0, 9.0, 11.0, predicted=29.0), _row("ring", 64, 10.0, 9.0, 11.0, predicted=3.0)
    assert not prediction_misses(close) and prediction_misses(off)
    assert format_row(close).endswith("      -           -      -         29.00")  # no in-place form
    assert format_row(off).endswith(" 3.00*")
    assert summary([close, off], "mpi4py")[-1] == ("# allreduce: 1 prediction(s) marked * are off the measured "
                                                   "time by more than 3x and left out of bench.png")


def test_wrong_elements_are_counted():
    assert count_wrong(np.array([1, 2, 3]), (np.array([1, 2, 4]),), "int32") == 1
    assert count_wrong(np.float32([1, 2]) * (1 + 1e-7), (np.float32([1, 2]),), "float32") == 0
    assert count_wrong(np.float32([1, 2.001]), (np.float32([1, 2]),), "float32") == 1
    assert count_wrong(np.zeros(2), (np.zeros(3),), "float64") == 3  # a wrong shape: all of it
    assert count_wrong((np.ones(2), np.ones(2)), (np.ones(2), np.zeros(2)), "float64") == 2
    assert count_wrong(np.ones(2), None, "float64") == 0  # nothing to check on this rank


class _RankZero:
    """A one-rank communicator for code that only broadcasts."""

    rank = 0

    def bcast(self, value, root=0):
        return value


def test_run_dir_is_injected_unless_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    mine = tmp_path / "mine"
    assert with_run_dir([f"hydra.run.dir={mine}"], _RankZero(), "bench") == [f"hydra.run.dir={mine}",
                                                                             f"hydra.sweep.dir={mine}"]
    assert mine.is_dir() and not (tmp_path / "hpcrt-runs").exists()  # no second, empty folder for sweeps
    agreed = str(tmp_path / "hpcrt-runs" / "bench" / "slurm-4242")
    assert with_run_dir(["bench.iters=2"], _RankZero(), "bench") == [
        "bench.iters=2", f"hydra.run.dir={agreed}", f"hydra.sweep.dir={agreed}"]
    given = ["hydra.run.dir=/x", "++hydra.sweep.dir=/y"]
    assert with_run_dir(given, _RankZero(), "bench") == given


def test_representative_pairs_one_per_link_class():
    topology = load_topology_file(SAMPLE_TOPOLOGY, 4, [Device("cpu")] * 4, ["host"] * 4)
    assert representative_pairs(topology) == {"intra": (0, 1), "eth": (0, 2)}
    costs = CostTable.of(topology).with_measured(links={"intra": LinkCost(1e-6, 1e-10), "eth": LinkCost(5e-6, 2e-10)})
    assert bottleneck_link(costs, topology) == LinkCost(5e-6, 2e-10)
    assert bottleneck_link(costs, topology, [0, 1]) == LinkCost(1e-6, 1e-10)


def test_fit_never_gives_a_negative_or_zero_beta():
    assert fit_link_cost(2e-6, 2e-6 + (1 << 20) * 1e-10).beta == pytest.approx(1e-10, rel=1e-3)
    noisy = fit_link_cost(5e-6, 4e-6)  # the large message came back faster than the small one
    assert noisy.alpha == 5e-6 and noisy.beta > 0


def _finite_positive(cost: LinkCost) -> bool:
    return all(math.isfinite(v) and v > 0 for v in (cost.alpha, cost.beta))


@pytest.mark.mpi(ranks=[1, 2], timeout=60)
def test_ping_pong_measures_intra_node(comm):
    rt = hpcrt.init({"log_files": False})
    try:
        measured = measure_link_costs(rt.comm, rt.topology, repetitions=5)
        assert comm.allgather(measured) == [measured] * comm.size
        if comm.size == 1:
            assert measured == {}  # no pair: the caller keeps nominal costs
        else:
            assert set(measured) == {"intra"} and _finite_positive(measured["intra"])
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[4], timeout=60)
def test_ping_pong_measures_the_classes_of_a_topology_file(comm):
    rt = hpcrt.init({"topology_file": str(SAMPLE_TOPOLOGY), "log_files": False})
    try:
        measured = measure_link_costs(rt.comm, rt.topology, repetitions=5)
        assert set(measured) == {"intra", "eth"}  # ib and roce join no two nodes here
        assert all(_finite_positive(c) for c in measured.values())
        priced = rt.costs.with_measured(links=measured).on(rt.topology)
        assert priced.link_cost(1, 3) == measured["eth"] and priced.link_cost(2, 3) == measured["intra"]
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[1, 2, 4], timeout=60)
def test_schedule_costs_are_measured_with_every_rank_taking_part(comm):
    rt = hpcrt.init({"log_files": False})
    try:
        measured = measure_schedule_costs(rt.comm, rt.topology, batches=3)
        assert comm.allgather(measured) == [measured] * comm.size
        if comm.size == 1:
            assert measured == {}  # no hop: the scan model keeps the link alone
        else:
            assert set(measured) == {"chain", "shift"} and all(_finite_positive(c) for c in measured.values())
            # all ranks on this host: a round of them runs ⌊cores/2⌋ hops side by side at most
            hops = shared_core_hops(rt.comm, rt.topology)
            assert hops == comm.size / max(1, len(os.sched_getaffinity(0)) // 2)
            chain, shift = measured["chain"], measured["shift"]
            assert shift.alpha >= hops * chain.alpha and shift.beta >= hops * chain.beta
            hop, rnd = token_pass(rt.comm, 64, passes=2), ring_shift(rt.comm, 64, passes=2)
            assert comm.allgather((hop, rnd)) == [(hop, rnd)] * comm.size and hop > 0 and rnd > 0
        block = measure_pipeline_block(rt.comm)
        assert comm.allgather(block) == [block] * comm.size
        assert block == 0 if comm.size == 1 else block > 0
        # every rank gets the same call costs, so every rank's auto makes the same choice
        calls = measure_call_costs(rt.comm, ScanLinks(LinkCost(1e-6, 1e-10), LinkCost(2e-6, 2e-10)))
        assert comm.allgather(calls) == [calls] * comm.size
        assert set(calls) == (set() if comm.size == 1 else SCAN_CALLS)
        assert all(cost.alpha >= 0 and cost.beta == 0 for cost in calls.values())
        assert calls == {} or calls["all_scan/pipeline"].alpha > 0  # hpcrt's work is not free
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[2], timeout=60)
@pytest.mark.parametrize("per_call", [False, True])
def test_per_call_timing_keeps_one_call_out_of_the_next(comm, per_call):
    """Each call is a barrier, then 4 ms of work on rank 0 alone. Back to back, rank 1 waits in the
    next call's barrier for rank 0's work, so its calls take 4 ms too; per call, that wait falls in
    the untimed barrier before the call, and rank 1's calls take next to nothing."""
    import time

    def call():
        comm.Barrier()
        time.sleep(0.004 if comm.rank == 0 else 0)
        return np.zeros(1)

    timing = time_calls(comm, call, warmup=1, iters=6, per_call=per_call)
    assert timing.max >= 0.004 and timing.min <= timing.avg <= timing.max
    if per_call:
        assert timing.min < 0.002  # rank 1
    else:
        assert timing.min > 0.003


def _forced(costs: CostTable, collective: str, algorithm: str) -> CostTable:
    """A table at which ``auto`` can only pick ``algorithm``: it cheap, every other algorithm dear."""
    dear, cheap = LinkCost(1.0, 0.0), LinkCost(1e-9, 1e-15)
    if collective == "all_scan":
        path = {"ring": "pipeline"}.get(algorithm, algorithm)
        return costs.with_measured(calls={f"all_scan/{p}": cheap if p == path else dear
                                          for p in ("pipeline", "allgather", "mpi", "mpi_user")})
    return costs.with_measured(steps={a: cheap if a == algorithm else dear for a in ("ring", "bidir_ring")},
                               calls={"allreduce/mpi": cheap if algorithm == "mpi" else dear})


def _peers_of(algorithm: str, rank: int, p: int) -> set:
    """The ranks ``algorithm`` sends to through hpcrt's transport (MPI's own calls send none there)."""
    ring = {"ring": {(rank + 1) % p}, "bidir_ring": {(rank + 1) % p, (rank - 1) % p}, "mpi": set()}
    scan = {"pipeline/1": set() if rank == p - 1 else {rank + 1}, "mpi": set(),
            "allgather": {(rank - (1 << k)) % p for k in range((p - 1).bit_length())}}
    return {**ring, **scan}[algorithm]


@pytest.mark.mpi(ranks=[4], timeout=90)
@pytest.mark.parametrize("collective, algorithm", [
    ("allreduce", "mpi"), ("allreduce", "ring"), ("allreduce", "bidir_ring"),
    ("all_scan", "mpi"), ("all_scan", "allgather"), ("all_scan", "pipeline/1")])
def test_the_ran_column_is_what_the_auto_calls_ran(comm, collective, algorithm):
    """At a cost table that leaves ``auto`` one choice, the bench's ``ran`` names it, and the bytes
    the timed calls put on the links (a ring to one neighbour, the bidirectional ring to both, the
    all-gather's Bruck rounds, MPI's own calls none through hpcrt) show that it is what ran."""
    from hpcrt.collectives.comm.linkbytes import count_link_bytes
    from hpcrt.jobs.bench.cases import BenchContext
    from hpcrt.jobs.bench.run import run_collective

    rt = hpcrt.init({"log_files": False})
    try:
        rt.costs = _forced(rt.costs, collective, algorithm.split("/")[0])
        settings = parse_settings({**BASE, "collectives": [collective], "min_bytes": 4096, "max_bytes": 4096,
                                   "iters": 3}, KNOWN_ALGORITHMS, KNOWN_OPS)
        ctx = BenchContext(rt.comm, rt.staging, "numpy", False)
        with count_link_bytes() as sent:
            (row,) = run_collective(ctx, COLLECTIVES[collective], [COLLECTIVES[collective].algorithms["auto"]],
                                    settings, rt.topology, lambda row: None)
        assert row.ran == algorithm and row.wrong == 0
        assert {dst for _, dst in sent.sent} == _peers_of(algorithm, comm.rank, comm.size)
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[2], timeout=60)
@pytest.mark.parametrize("collective, algorithm", [
    ("allreduce", "mpi"), ("allreduce", "ring"), ("all_scan", "mpi"), ("all_scan", "pipeline/1")])
def test_auto_ran_tallies_each_call_once(comm, collective, algorithm):
    """Each ``auto`` call is one tally of what it ran, whether it took MPI's direct path or the
    general one (a call that looked at the direct path first and then ran another algorithm was
    once tallied twice), and the calls give numpy's results."""
    from hpcrt.collectives import all_scan, allreduce
    from hpcrt.collectives.costmodel.memo import auto_ran

    rt = hpcrt.init({"log_files": False})
    try:
        rt.costs = _forced(rt.costs, collective, algorithm.split("/")[0])
        x = np.arange(4.0) + 10 * comm.rank
        call = {"allreduce": lambda: allreduce(x), "all_scan": lambda: all_scan(x, "sum", inclusive=True)}[collective]
        with auto_ran() as ran:
            results = [call() for _ in range(3)]
        family = "rings" if collective == "allreduce" else "all_scan"
        assert ran == {(family, algorithm): 3}
        ranks = np.arange(comm.size if collective == "allreduce" else comm.rank + 1)
        want = (np.arange(4.0)[None, :] + 10 * ranks[:, None]).sum(axis=0)
        for result in results:
            np.testing.assert_array_equal(result, want)
    finally:
        hpcrt.finalize()
