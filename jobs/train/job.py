"""The training loop: build the layout, the model and the optimizer, resume, then per step —
batch, forward and backward over the sp group, gradient exchange, Adam, monitor step, rebalance,
asynchronous checkpoint — and at the end the summary and the plot."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from mpi4py import MPI
from omegaconf import DictConfig, OmegaConf

import hpcrt
import hpcrt.monitor
from hpcrt import ConfigError
from hpcrt.checkpoint import Checkpointer
from hpcrt.core.abort import crash_exit
from hpcrt.collectives import allreduce

from hpcrt.jobs.hydra_mpi import say_once_and_exit
from hpcrt.jobs.train.balance import initial_weights
from hpcrt.jobs.train.config import Settings, check_rebalance, parse_settings
from hpcrt.jobs.train.data import Source, make_source
from hpcrt.jobs.train.ending import record_end, requeue_after_shutdown
from hpcrt.jobs.train.layout import Layout, format_table, make_layout
from hpcrt.jobs.train.metrics import MetricsLog, StepTimer, read_metrics
from hpcrt.jobs.train.model import init_params, loss_and_grad
from hpcrt.jobs.train.optim import Adam, make_sync
from hpcrt.jobs.train.rebalance import OnlineBalance
from hpcrt.jobs.train.report import params_digest, plot, write_summary
from hpcrt.jobs.train.state import open_and_resume, training_state

log = logging.getLogger("hpcrt.jobs.train")


def run(cfg: DictConfig) -> None:
    """One job of the app (one point of a sweep): check the config, train, report."""
    world = MPI.COMM_WORLD
    try:
        settings = parse_settings(OmegaConf.to_container(cfg, resolve=True), world.size)
        monitor_config = hpcrt.monitor.resolve_monitor_config(cfg.monitor) if settings.train.monitor else None
        source = make_source(settings.data, settings.shape.vocab, settings.train.seq_len)
    except ConfigError as error:
        say_once_and_exit("train", error)
    runtime = hpcrt.init(cfg.runtime)
    try:
        result = train(settings, source, runtime.run_dir, monitor_config)
    except ConfigError as error:  # found collectively (e.g. a checkpoint of another model): the same on every rank
        say_once_and_exit("train", error)
    except Exception:
        crash_exit()  # one rank's traceback, and the whole job ends (Hydra would go on)
    hpcrt.finalize()
    rank = world.rank  # MPI is finalized below
    if result.stopped is not None:
        requeue_after_shutdown(runtime.run_dir, rank, result.stopped, settings.stop.max_requeues)
    # A stop every rank agreed on, not a crash: no abort. Under srun only rank 0 says it, so that a
    # site's KillOnBadExit cannot kill rank 0 while it asks for the requeue (stop.json has the reason).
    code = result.exit_code if rank == 0 or hpcrt.slurm_job_id(os.environ) is None else 0
    if code:
        raise SystemExit(code)


@dataclass
class Result:
    """What a run leaves every rank: its steps' metrics and the final parameters on the host."""

    rows: list = field(default_factory=list)
    params: Any = None
    resumed_from: int = 0
    stopped: Optional[tuple[str, int]] = None
    """(why, step) when the run stopped early (a signal or the time budget)."""
    exit_code: int = 0


def train(settings: Settings, source: Source, run_dir: Path, monitor_config: Any = None, *,
          report: bool = True) -> Result:
    """Train on the runtime's ranks with ``settings``, checkpointing into ``run_dir`` (the same path
    on every rank) and resuming from it as ``train.resume`` says; ``report``: rank 0 writes
    ``summary.json`` and ``train.png`` at the end (collective)."""
    runtime = hpcrt.get_runtime()
    hpcrt.share_cores(runtime)
    leader, train, par = runtime.rank == 0, settings.train, settings.parallel
    check_rebalance(par, None if monitor_config is None else monitor_config.report_every)
    devices = [info.device.kind for info in runtime.topology.ranks]
    layout = make_layout(runtime, par, train.batch, train.seq_len,
                         initial_weights(par.balance, par.weights, par.gpu_weight, devices))
    if leader:
        log.info("run directory %s\nlayout dp=%d x sp=%d, zero=%s, scan=%s, balance=%s\n%s", run_dir, par.dp,
                 par.sp, par.zero, par.scan, par.balance, format_table(layout.table))
        if source.entropy_floor is not None:
            log.info("data: Markov chain, entropy rate %.4f nats/token (the loss floor)", source.entropy_floor)
    params = init_params(settings.shape, train.seed, settings.dtype, runtime.xp)
    sync = make_sync(par.zero, params.size, runtime.comm, par.allreduce, params)
    adam = Adam(sync.owned.stop - sync.owned.start, params, train.lr, train.beta1, train.beta2, train.eps)
    result = Result()
    checkpointer, result.resumed_from, saved_balance = open_and_resume(
        run_dir, train.resume, settings.checkpoint.keep, params, adam, sync.owned, settings.model_hash())
    if leader and result.resumed_from < train.steps:
        hpcrt.clear_done(run_dir)  # more steps asked of a finished run: it may stop and requeue again
    monitor = _start_monitor(monitor_config, run_dir)
    metrics = MetricsLog(run_dir / "metrics.jsonl", leader, result.resumed_from, train.steps, train.log_every)
    timer = StepTimer(monitor)
    online = (OnlineBalance(par, layout, monitor, runtime.comm, train.batch, train.seq_len)
              if par.balance == "monitor" else None)
    if online is not None:
        online.resume(saved_balance)  # the shares and the pending proposal a rebalance had left
    shares_changed = True
    deadline = hpcrt.environment_deadline(settings.stop.grace_s, settings.stop.max_minutes)
    if leader and deadline is not None and deadline <= time.time():
        log.warning("the time budget is spent before the first step (Slurm's end time minus stop.grace_s = %s s, "
                    "or stop.max_minutes): the job will stop after one step", settings.stop.grace_s)
    stopper = hpcrt.GracefulStop(settings.stop.signals, deadline)
    try:
        for step in range(result.resumed_from + 1, train.steps + 1):
            row = _step(step, runtime, settings, source, layout, params, sync, adam, checkpointer, timer)
            if shares_changed:
                row.update(shares=layout.shards.per_rank(), weights=layout.weights)
            if monitor is not None:
                monitor.step(step)
            decided = online.after_step(step) if online is not None else None
            shares_changed = decided is not None and decided["changed"]
            reason = stopper.requested(runtime.comm) if step < train.steps else None
            every = settings.checkpoint.every
            if reason is not None or step == train.steps or (every and step % every == 0):
                _save(checkpointer, step, settings, params, adam, sync, timer, row,
                      online.saved_state(step) if online is not None else {"in_force": layout.weights})
            metrics.record(row)
            result.rows.append(row)
            if reason is not None:
                result.stopped = (reason, step)
                break
        metrics.close()
        checkpointer.wait()
        checkpointer.close()
        if monitor is not None:
            hpcrt.monitor.stop()
        result.params = params.get() if hasattr(params, "get") else params
        last = result.rows[-1]["step"] if result.rows else result.resumed_from
        if leader and report:
            _finish(run_dir, settings, source, result, checkpointer.places.step_dir(last), runtime.size, sync.owned)
        layout.free()
        sync.free()
        result.exit_code = record_end(run_dir, runtime.comm, result.stopped, last)
    finally:
        stopper.close()
    return result


def _start_monitor(config: Any, run_dir: Path) -> Any:
    """The monitor, when on; a hang or a death it detects is recorded as the run's end before it aborts."""
    if config is None:
        return None
    monitor = hpcrt.monitor.start(config)
    code = monitor.config.abort_exit_code
    for event in ("hang", "death"):
        monitor.on(event, lambda found, kind=event: hpcrt.write_stop_record(
            run_dir, kind, int(found.get("step", -1)), code, why=str(found.get("message", ""))))
    return monitor


def _save(checkpointer: Checkpointer, step: int, settings: Settings, params: Any, adam: Adam, sync: Any,
          timer: StepTimer, row: dict, balance: dict) -> None:
    """Start the asynchronous checkpoint of the state after ``step`` and its rebalance decision
    (``balance``: the weights in force, next and pending), its time counted in ``row``."""
    started = time.perf_counter()
    with timer.section("checkpoint"):
        checkpointer.save(step, training_state(step, params, adam, sync.owned, sync.saved, settings.model_hash(),
                                               {**asdict(settings.parallel), **balance}))
        if settings.checkpoint.blocking:
            checkpointer.wait()
    seconds = row["step_s"] + time.perf_counter() - started
    row.update(checkpointed=True, step_s=seconds, tokens_per_s=row["tokens_per_s"] * row["step_s"] / seconds,
               checkpoint=row["checkpoint"] + timer.take()["checkpoint"])


def _step(step: int, runtime: hpcrt.Runtime, settings: Settings, source: Source, layout: Layout, params: Any,
          sync: Any, adam: Adam, checkpointer: Checkpointer, timer: StepTimer) -> dict:
    """One optimizer step; its metrics row (the checkpoint after it, if any, is saved by ``_save``)."""
    train, xp = settings.train, runtime.xp
    started = time.perf_counter()
    with timer.section("forward"):
        sequences = source.batch(train.seed, step, train.batch, train.seq_len + 1)[slice(*layout.rows)]
        first, last = layout.tokens
        inputs, targets = xp.asarray(sequences[:, first:last]), xp.asarray(sequences[:, first + 1:last + 1])
    with timer.compute():
        loss, grad = loss_and_grad(settings.shape, params, inputs, targets, sp_comm=layout.sp_comm,
                                   scan=settings.parallel.scan, normalizer=train.batch * train.seq_len,
                                   section=timer.section)
    with timer.section("grad_sync"):
        grad = sync.reduce(grad)
        loss = float(allreduce(np.array([loss]), "sum", comm=runtime.comm, algorithm="mpi")[0])
    with timer.section("checkpoint"):
        checkpointer.wait_snapshot()  # the previous save's copy, before Adam overwrites what it reads
    with timer.section("optimizer"):
        adam.update(params[sync.owned], grad, step)
    with timer.section("grad_sync"):
        sync.gather(params)
    seconds = time.perf_counter() - started
    tokens = train.batch * train.seq_len
    return {"step": step, "loss": loss, "tokens": step * tokens, "tokens_per_s": tokens / seconds,
            "step_s": seconds, "checkpointed": False, **timer.take()}


def _finish(run_dir: Path, settings: Settings, source: Source, result: Result, last_checkpoint: Path, world: int,
            owned: slice) -> None:
    """Rank 0: ``summary.json`` and ``train.png``; ``last_checkpoint`` is the last step's folder."""
    rows = read_metrics(run_dir / "metrics.jsonl")
    par = settings.parallel
    summary = write_summary(
        run_dir / "summary.json", rows, entropy_floor=source.entropy_floor,
        resumed_from=result.resumed_from or None,
        layout={"ranks": world, "dp": par.dp, "sp": par.sp, "zero": par.zero, "scan": par.scan,
                "allreduce": par.allreduce},
        stopped=None if result.stopped is None else {"reason": result.stopped[0], "step": result.stopped[1]},
        restart_count=hpcrt.restart_count(os.environ), slurm_job=hpcrt.slurm_job_id(os.environ),
        adam_elements=owned.stop - owned.start, numel=result.params.size,
        checkpoint=str(last_checkpoint) if last_checkpoint.is_dir() else None,
        params_digest=params_digest(result.params))
    plot(run_dir / "train.png", run_dir / "metrics.jsonl", run_dir / "monitor" / "stragglers.jsonl",
         source.entropy_floor, f"hpcrt train: {world} ranks, dp={par.dp} x sp={par.sp}, zero={par.zero}")
    floor = "" if source.entropy_floor is None else f" (entropy floor {source.entropy_floor:.4f})"
    log.info("final loss %.4f%s after %d steps; wrote summary.json, metrics.jsonl and train.png to %s",
             summary["final_loss"], floor, summary["steps"], run_dir)
