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
import sys
from typing import Optional

import mpi4py
import numba
import numpy as np
from mpi4py import MPI
from omegaconf import DictConfig, OmegaConf

import hpcrt
from hpcrt import ConfigError
from hpcrt.collectives import RingCosts, calibrate, ring_costs, scan_links
from hpcrt.costmodel.links import SCHEDULES, bottleneck_link

from hpcrt.jobs.bench.cases import COLLECTIVES, DEFAULT_EXCLUDED, KNOWN_OPS, Algorithm, BenchContext, Collective
from hpcrt.jobs.bench.config import BenchSettings, parse_settings
from hpcrt.jobs.bench.plot import plot
from hpcrt.jobs.bench.report import Row, format_row, header, summary, write_csv, write_json
from hpcrt.jobs.bench.run import run_collective
from hpcrt.jobs.bench.suites import SUITES, format_suite, run_suite
from hpcrt.jobs.hydra_mpi import mpi_hydra_main

log = logging.getLogger("hpcrt.jobs.bench")


class ResultsWrong(RuntimeError):
    """Some algorithm's result differed from the numpy reference (the job still wrote its files)."""


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


def metadata(runtime: hpcrt.Runtime, cfg: DictConfig, nominal: dict, measured: dict, started: str) -> dict:
    """What a reader needs to trust and reproduce the numbers."""
    scan = scan_links(runtime.topology)
    return {
        "started": started,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
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
        "cores": len(os.sched_getaffinity(0)),
        "ranks_on_host": sum(r.host == runtime.topology.ranks[runtime.rank].host for r in runtime.topology.ranks),
        "nominal_link_costs": _link_table(nominal),
        "measured_link_costs": _link_table(measured),
        "prediction_link": _link_entry(bottleneck_link(runtime.topology)),
        "prediction_ring_costs": _ring_costs_entry(ring_costs(runtime.topology)),
        "prediction_scan_links": {**{schedule: _link_entry(getattr(scan, schedule)) for schedule in SCHEDULES},
                                  "pipeline_block_us": scan.block_alpha * 1e6,
                                  "call_us": {path: seconds * 1e6 for path, seconds in scan.calls}},
        "command_line": list(sys.orig_argv),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


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
    try:
        wrong = _measure_and_report(runtime, cfg, settings, algorithms, started)
    except Exception:
        sys.exit(1)  # the abort hook reports this rank's traceback and ends the job (Hydra would go on)
    run_dir = runtime.run_dir
    hpcrt.finalize()
    if wrong:
        raise ResultsWrong(f"{wrong} element(s) off the numpy reference; see the #wrong column of "
                           f"{run_dir / 'results.csv'}")


def _measure_and_report(runtime: hpcrt.Runtime, cfg: DictConfig, settings: BenchSettings,
                        algorithms: dict[str, list[Algorithm]], started: str) -> int:
    """Measure every collective, print and write the results; the number of wrong elements."""
    comm, leader = runtime.comm, runtime.rank == 0
    hpcrt.share_cores(runtime)
    nominal = dict(runtime.topology.link_costs)
    # Under link emulation the topology file's costs are what messages pay: measuring the real
    # path beneath would predict the wrong thing.
    measure = settings.link_costs == "measured" and not runtime.topology.emulate
    measured = calibrate() if measure else {}
    link, scan = bottleneck_link(runtime.topology), scan_links(runtime.topology)
    source = "emulated, from the topology file" if runtime.topology.emulate else settings.link_costs
    log.info("run directory %s; prediction link alpha %.2f us, %.2f GB/s; ring steps %s; All-Scan chain hop "
             "alpha %.2f us, %.2f GB/s, shift round alpha %.2f us, %.2f GB/s, pipeline block %.2f us, call %s (%s)",
             runtime.run_dir, link.alpha * 1e6, 1e-9 / link.beta,
             ", ".join(f"{algorithm} alpha {step.alpha * 1e6:.1f} us, {1e-9 / step.beta:.2f} GB/s"
                       for algorithm, step in ring_costs(runtime.topology).steps) or "not measured",
             scan.chain.alpha * 1e6, 1e-9 / scan.chain.beta, scan.shift.alpha * 1e6, 1e-9 / scan.shift.beta,
             scan.block_alpha * 1e6,
             ", ".join(f"{path} {seconds * 1e6:.1f} us" for path, seconds in scan.calls) or "not measured", source)
    ctx = BenchContext(comm, runtime.staging, settings.buffers, settings.arg_check)
    rows: list[Row] = []
    summaries: list[str] = []
    for name, chosen in algorithms.items():
        collective = COLLECTIVES[name]
        _say(leader, header(name, runtime.size, collective.baseline))
        mine = run_collective(ctx, collective, chosen, settings, runtime.topology,
                              lambda row: _say(leader, format_row(row)))
        lines = summary(mine, collective.baseline)
        _say(leader, "\n".join(lines))
        rows += mine
        summaries += lines
    suites = {}
    for name in settings.suites:
        suites[name] = run_suite(name, runtime)
        _say(leader, format_suite(name, suites[name]))
    if leader:
        write_csv(runtime.run_dir / "results.csv", rows)
        write_json(runtime.run_dir / "results.json", rows, summaries,
                   metadata(runtime, cfg, nominal, measured, started), suites)
        if rows:
            plot(runtime.run_dir / "bench.png", rows,
                 f"hpcrt bench: {runtime.size} ranks, {len(runtime.topology.nodes)} node(s), {settings.dtype}, "
                 f"{settings.buffers}")
        log.info("wrote results.csv, results.json%s to %s", " and bench.png" if rows else "", runtime.run_dir)
    wrong = sum(r.wrong or 0 for r in rows)
    _say(leader, f"# Out of bounds values : {wrong} {'FAILED' if wrong else 'OK'}")
    comm.Barrier()
    return wrong


def _say(leader: bool, text: str) -> None:
    """Rank 0 prints the table as it grows (flushed, so a sweep shows progress)."""
    if leader and text:
        print(text, flush=True)


def main() -> None:
    """Entry point of ``python -m hpcrt.jobs.bench``."""
    mpi_hydra_main("bench", "bench", run)
