"""``python -m hpcrt.jobs.bench``: collective microbenchmarks in the form nccl-tests and OSU print
them — per size time avg/min/max across ranks, algbw, busbw, #wrong — for every algorithm side by
side with MPI's own, beside the α-β cost model's prediction (α, β measured in the same run: a
ping-pong per link class, and a token chain and a ring shift over all ranks). Writes
``results.csv``, ``results.json`` and ``bench.png`` into the run directory.

    mpiexec -n 4 python -m hpcrt.jobs.bench bench.collectives=[allreduce] bench.max_bytes=1048576
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import mpi4py
import numba
import numpy as np
from mpi4py import MPI
from omegaconf import DictConfig, OmegaConf

import hpcrt
from hpcrt import ConfigError
from hpcrt.collectives import RingCosts, calibrate, ring_costs, scan_links
from hpcrt.core.abort import crash_exit
from hpcrt.costmodel.model import SCHEDULES, bottleneck_link

from hpcrt.jobs.bench.cases import COLLECTIVES, DEFAULT_EXCLUDED, KNOWN_OPS, Algorithm, BenchContext, Collective
from hpcrt.jobs.bench.config import BenchSettings, parse_settings
from hpcrt.jobs.bench.plot import plot
from hpcrt.jobs.bench.report import (ResultsFiles, Row, average_bus_bandwidth, format_row, header, oversubscribed,
                                     summary)
from hpcrt.jobs.bench.run import run_collective
from hpcrt.jobs.bench.suites import SUITES, format_suite, run_suite
from hpcrt.jobs.hydra_mpi import mpi_hydra_main

log = logging.getLogger("hpcrt.jobs.bench")


STOP_SIGNALS = ("SIGINT", "SIGTERM")
"""Ctrl-C on mpiexec, and the launcher's TERM: every rank stops after the row it is measuring, the
rows measured kept, and exits with 128 + the signal's number (130 for Ctrl-C), as a shell reports it."""


class ResultsWrong(RuntimeError):
    """Some algorithm's result differed from the numpy reference (the job still wrote its files)."""


class Interrupted(Exception):
    """Every rank agreed to stop at the same point of the run: ``reason`` names the signal."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _stop_if_asked(stopper: hpcrt.GracefulStop, comm: Any) -> None:
    """Raise :class:`Interrupted` on every rank when any rank got a stop signal (collective)."""
    reason = stopper.requested(comm)
    if reason is not None:
        raise Interrupted(reason)


def _host_cores(runtime: hpcrt.Runtime) -> int:
    """The cores the ranks on this rank's host may run on, together (collective)."""
    host = runtime.topology.ranks[runtime.rank].host
    seen = runtime.comm.allgather((host, sorted(os.sched_getaffinity(0))))
    return len({core for where, cores in seen if where == host for core in cores})


def _git_commit() -> Optional[str]:
    """The commit of the clone hpcrt runs from, or None when it is installed, not cloned."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(hpcrt.__file__).parent, capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found.stdout.strip() if found.returncode == 0 else None


def _cannot_run(collective: Collective, settings: BenchSettings) -> Optional[str]:
    """Why a collective has nothing to run with these settings, or None."""
    if np.dtype(settings.dtype).kind not in collective.dtype_kinds:
        return f"it takes no {settings.dtype}"
    if collective.ops and not set(settings.ops) & set(collective.ops):
        return f"it takes none of the ops {', '.join(settings.ops)}"
    return None


def select_algorithms(settings: BenchSettings) -> tuple[dict[str, list[Algorithm]], dict[str, str]]:
    """Per runnable collective the algorithms to run, and why the others are skipped.

    Asking for an algorithm that cannot run here, or for nothing that can, is an error.
    """
    if settings.buffers == "cupy" and importlib.util.find_spec("cupy") is None:
        raise ConfigError("bench config key 'buffers': cupy buffers need CuPy, which is not installed")
    skipped = {name: why for name in settings.collectives if (why := _cannot_run(COLLECTIVES[name], settings))}
    if len(skipped) == len(settings.collectives):
        raise ConfigError(f"bench config key 'collectives': none can run: "
                          f"{'; '.join(f'{name}: {why}' for name, why in skipped.items())}")
    chosen = {}
    for name in (n for n in settings.collectives if n not in skipped):
        available = {a: algorithm for a, algorithm in COLLECTIVES[name].algorithms.items()
                     if algorithm.runs_on(settings.buffers)}
        wanted = settings.algorithms[name]
        if wanted is None:
            wanted = tuple(a for a in available if a not in DEFAULT_EXCLUDED)
        missing = [a for a in wanted if a not in available]
        if missing:
            raise ConfigError(f"bench config key 'algorithms.{name}': {missing[0]!r} cannot run here "
                              f"(buffers={settings.buffers}); available: {', '.join(available) or 'none'}")
        chosen[name] = [available[a] for a in wanted]
    return chosen, skipped


def _link_entry(cost: hpcrt.LinkCost) -> dict:
    return {"alpha_us": cost.alpha * 1e6, "bandwidth_gbytes_s": 1e-9 / cost.beta if cost.beta > 0 else None}


def _link_table(costs: dict) -> dict:
    return {name: _link_entry(cost) for name, cost in sorted(costs.items())}


def _ring_costs_entry(costs: RingCosts) -> dict:
    """The rings' predictions' costs: each measured step, MPI's measured allreduce call, and the
    work charged to a step that was not measured."""
    return {"steps": {name: _link_entry(step) for name, step in costs.steps},
            "mpi_allreduce": _link_entry(costs.mpi_allreduce) if costs.mpi_allreduce is not None else None,
            "unmeasured_step_work_us": costs.step_work * 1e6}


def metadata(runtime: hpcrt.Runtime, cfg: DictConfig, nominal: dict, measured: dict, started: str,
             host_cores: int) -> dict:
    """What a reader needs to trust and reproduce the numbers."""
    scan = scan_links(runtime.costs, runtime.topology)
    return {
        "started": started,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hpcrt": hpcrt.__version__,
        "git_commit": _git_commit(),
        "ranks": runtime.size,
        "nodes": runtime.topology.nodes,
        "hosts": sorted({r.host for r in runtime.topology.ranks}),
        "topology": runtime.topology.source,
        "mpi_library": " ".join(MPI.Get_library_version().splitlines()[0].split()),
        "mpi4py": mpi4py.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": runtime.device.kind,
        "cuda_aware": runtime.cuda_aware.enabled,
        "heap_kept": runtime.heap_kept,
        "numba_threads": numba.get_num_threads(),
        "cores": host_cores,
        "ranks_on_host": _ranks_on_host(runtime),
        "warnings": [w for w in (oversubscribed(_ranks_on_host(runtime), host_cores),) if w],
        "nominal_link_costs": _link_table(nominal),
        "measured_link_costs": _link_table(measured),
        "prediction_link": _link_entry(bottleneck_link(runtime.costs, runtime.topology)),
        "prediction_ring_costs": _ring_costs_entry(ring_costs(runtime.costs, runtime.topology)),
        "prediction_scan_links": {**{schedule: _link_entry(getattr(scan, schedule)) for schedule in SCHEDULES},
                                  "pipeline_block_us": scan.block_alpha * 1e6,
                                  "call_us": {path: seconds * 1e6 for path, seconds in scan.calls},
                                  "mpi_rounds": [_link_entry(cost) for cost in scan.mpi_rounds]},
        "command_line": list(sys.orig_argv),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _ranks_on_host(runtime: hpcrt.Runtime) -> int:
    host = runtime.topology.ranks[runtime.rank].host
    return sum(r.host == host for r in runtime.topology.ranks)


def run(cfg: DictConfig) -> None:
    """One job of the app (one point of a sweep): check the config, measure, report."""
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    # A ConfigError here, or a bad topology file in init, is the same on every rank: the app says it
    # once (hydra_mpi.CheckedTask) and every rank exits with 2.
    settings = parse_settings(OmegaConf.to_container(cfg.bench, resolve=True),
                              {name: tuple(c.algorithms) for name, c in COLLECTIVES.items()}, KNOWN_OPS, SUITES)
    algorithms, skipped = select_algorithms(settings) if settings.collectives else ({}, {})
    runtime = hpcrt.init(cfg.runtime)
    for name, why in skipped.items():
        log.info("%s skipped: %s", name, why)
    stopper = hpcrt.GracefulStop(STOP_SIGNALS)
    try:
        wrong = _measure_and_report(runtime, cfg, settings, algorithms, started, stopper)
    except Interrupted as stop:  # on every rank at the same row: a clean end, no abort
        _end_interrupted(runtime, stop.reason)
    except Exception:
        crash_exit()  # one rank's traceback, and the whole job ends (Hydra would go on)
    finally:
        stopper.close()
    run_dir = runtime.run_dir
    hpcrt.finalize()
    if wrong:
        raise ResultsWrong(f"{wrong} element(s) off the numpy reference; see the #wrong column of "
                           f"{run_dir / 'results.csv'}")


def _end_interrupted(runtime: hpcrt.Runtime, reason: str) -> NoReturn:
    """Rank 0 says where the rows measured are; every rank exits with 128 + the signal's number."""
    if runtime.rank == 0:
        print(f"bench: stopped by {reason}; the rows measured are in {runtime.run_dir / 'results.csv'} and "
              f"results.json", file=sys.stderr, flush=True)
    hpcrt.finalize()
    raise SystemExit(128 + signal.Signals[reason].value)


def _measure_and_report(runtime: hpcrt.Runtime, cfg: DictConfig, settings: BenchSettings,
                        algorithms: dict[str, list[Algorithm]], started: str, stopper: hpcrt.GracefulStop) -> int:
    """Measure every collective, print and write the results as they come; the number of wrong
    elements. Stops every rank at the same row, raising :class:`Interrupted`, after a stop signal."""
    comm, leader = runtime.comm, runtime.rank == 0
    if leader:
        log.info("run directory %s", runtime.run_dir)  # before calibration, the first long phase
    hpcrt.share_cores(runtime)
    host_cores = _host_cores(runtime)
    nominal = dict(runtime.topology.link_costs)
    # Under link emulation the topology file's costs are what messages pay: measuring the real
    # path beneath would predict the wrong thing.
    measure = settings.link_costs == "measured" and not runtime.topology.emulate
    measured = calibrate().entries() if measure else {}
    link, scan = bottleneck_link(runtime.costs, runtime.topology), scan_links(runtime.costs, runtime.topology)
    source = "emulated, from the topology file" if runtime.topology.emulate else settings.link_costs
    log.info("prediction link alpha %.2f us, %.2f GB/s; ring steps %s; All-Scan chain hop "
             "alpha %.2f us, %.2f GB/s, shift round alpha %.2f us, %.2f GB/s, MPI scan round %s, pipeline block "
             "%.2f us, call %s (%s)",
             link.alpha * 1e6, 1e-9 / link.beta,
             ", ".join(f"{algorithm} alpha {step.alpha * 1e6:.1f} us, {1e-9 / step.beta:.2f} GB/s"
                       for algorithm, step in ring_costs(runtime.costs, runtime.topology).steps) or "not measured",
             scan.chain.alpha * 1e6, 1e-9 / scan.chain.beta, scan.shift.alpha * 1e6, 1e-9 / scan.shift.beta,
             ", ".join(f"alpha {cost.alpha * 1e6:.2f} us, {1e-9 / cost.beta:.2f} GB/s" for cost in scan.mpi_rounds)
             or "not measured",
             scan.block_alpha * 1e6,
             ", ".join(f"{path} {seconds * 1e6:.1f} us" for path, seconds in scan.calls) or "not measured", source)
    ctx = BenchContext(comm, runtime.staging, settings.buffers, settings.arg_check)
    warning = oversubscribed(_ranks_on_host(runtime), host_cores)
    files = ResultsFiles(runtime.run_dir, metadata(runtime, cfg, nominal, measured, started, host_cores)) \
        if leader else None
    rows: list[Row] = []

    def record(row: Row) -> None:
        _say(leader, format_row(row))
        rows.append(row)
        if files is not None:
            files.add(row)
        _stop_if_asked(stopper, comm)

    try:
        _stop_if_asked(stopper, comm)  # a signal during calibration: the files exist, with no rows
        for name, chosen in algorithms.items():
            collective = COLLECTIVES[name]
            _say(leader, header(name, runtime.size, collective.baseline, warning))
            lines = summary(run_collective(ctx, collective, chosen, settings, runtime.topology, record),
                            collective.baseline)
            _say(leader, "\n".join(lines))
            if files is not None:
                files.summaries += lines
        for name in settings.suites:
            suite = run_suite(name, runtime)
            _say(leader, format_suite(name, suite))
            if files is not None:
                files.suites[name] = suite
            _stop_if_asked(stopper, comm)
    except Interrupted as stop:
        if files is not None:
            files.write_json(stopped=stop.reason)
            files.close()
        raise
    wrong = sum((r.wrong or 0) + (r.wrong_in_place or 0) for r in rows)
    closing = [f"# Out of bounds values : {wrong} {'FAILED' if wrong else 'OK'}", average_bus_bandwidth(rows)]
    if files is not None:
        files.metadata = metadata(runtime, cfg, nominal, measured, started, host_cores)
        files.summaries += closing
        files.write_json()
        files.close()
        if rows:
            plot(runtime.run_dir / "bench.png", rows,
                 f"hpcrt bench: {runtime.size} ranks, {len(runtime.topology.nodes)} node(s), {settings.dtype}, "
                 f"{settings.buffers}")
        log.info("wrote results.csv, results.json%s to %s", " and bench.png" if rows else "", runtime.run_dir)
    _say(leader, "\n".join(closing))
    comm.Barrier()
    return wrong


def _say(leader: bool, text: str) -> None:
    """Rank 0 prints the table as it grows (flushed, so a sweep shows progress)."""
    if leader and text:
        print(text, flush=True)


def main() -> None:
    """Entry point of ``python -m hpcrt.jobs.bench``."""
    mpi_hydra_main("bench", "bench", run)
