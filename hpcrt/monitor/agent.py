"""The monitor of one rank: flight recorder, straggler windows, watchdog and escalating actions.

It never imports collectives or checkpoint: those reach it through ``trace.py``, and what should
happen on a finding (checkpoint now, rebalance) is a callback registered with :meth:`Monitor.on`.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from time import perf_counter
from typing import Any, Callable, Dict, List, Mapping, Optional

from hpcrt.core import trace_hook as trace
from hpcrt.core.abort import FORWARD_GRACE_S
from hpcrt.core.config import ConfigError
from hpcrt.core.files import read_json, write_json
from hpcrt.core.rundir import agree_run_dir
from hpcrt.core.ulfm import abort_world, failed_world_ranks, revoke_and_shrink, ulfm_available
from hpcrt.monitor.config import MonitorConfig, resolve_monitor_config
from hpcrt.monitor.dumps import write_dump
from hpcrt.monitor.faults import FaultInjector
from hpcrt.monitor.progress import STEP_WORD, map_progress, progress_path
from hpcrt.monitor.recorder import COLLECTIVE, SECTION, STEP, FlightRecorder
from hpcrt.monitor.sidechannel import MonitorDir, start_sentinel
from hpcrt.monitor.straggler import WORK, StragglerTracker, score_window, summarize
from hpcrt.monitor.watchdog import Watchdog

log = logging.getLogger("hpcrt.monitor")
EVENTS = ("straggler", "hang", "death")
EXCHANGE_OP = "monitor.exchange"


class _Section:
    """``with monitor.section(name):`` — a flight-recorder record and a self-time sample (its
    duration minus the time spent in collectives inside it). One reusable object per name, so
    that the hot path allocates nothing; nesting the same name works, sharing it across threads
    does not (the recorder is the main thread's)."""

    __slots__ = ("_monitor", "_recorder", "_name", "_open")

    def __init__(self, monitor: "Monitor", name: str):
        self._monitor, self._recorder, self._name = monitor, monitor.recorder, name
        self._open: List[tuple] = []

    def __enter__(self) -> "_Section":
        rec = self._recorder
        self._open.append((rec.enter(SECTION, self._name), rec.coll_time))
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        seq, coll0 = self._open.pop()
        rec = self._recorder
        elapsed = rec.exit(seq)
        if elapsed:  # 0.0: the ring overwrote the record while the section ran
            self._monitor._sections[self._name].append(elapsed - (rec.coll_time - coll0))


class Monitor:
    """Create with :func:`start`. Call :meth:`step` once per training step, wrap work in
    :meth:`section`; hpcrt collectives are recorded through the trace hook."""

    def __init__(self, runtime: Any, config: MonitorConfig, directory: Path):
        if "shrink" in config.death_actions and not ulfm_available():
            raise ConfigError("hpcrt monitor config key 'death_actions': 'shrink' needs Open MPI with ULFM "
                              "(mpiexec --with-ft ulfm); this MPI library has none")
        faults = config.fault_specs(runtime.size)
        self.config = config
        self.rank, self.size, self.node = runtime.rank, runtime.size, runtime.node
        self.nodes = [r.node for r in runtime.topology.ranks]
        self.comm = runtime.comm.Dup()
        """The monitor's own communicator: its exchanges never match user or library traffic."""
        self.members = list(range(self.size))
        """World ranks still in the job (fewer after a ULFM shrink)."""
        self.mdir = MonitorDir(directory).create()
        self.recorder = FlightRecorder(config.capacity)
        self._callbacks: Dict[str, List[Callable[[dict], None]]] = {e: [] for e in EVENTS}
        self._sections: Dict[str, List[float]] = defaultdict(list)
        self._section_blocks: Dict[str, _Section] = {}
        self._work: List[float] = []
        self._best: Dict[str, float] = {}
        self._tracker = StragglerTracker(config.threshold, config.consecutive)
        self._fired: set = set()
        self._window = 0
        self._window_start = 0
        self.last_window: Optional[dict] = None
        """The newest straggler window's report (the same on every rank), for callers that act on it."""
        self._t_step = perf_counter()
        self._coll_at_step = 0.0
        self._faults = FaultInjector(faults, self.rank, lambda: self.watchdog.heartbeat("running"))
        self._lock = threading.Lock()
        self._dumped = False
        self.closed = False
        if self.rank == 0:
            write_json(self.mdir.meta, {"size": self.size, "nodes": self.nodes, "started_at": time.time(),
                                        "config": config.__dict__})
        self.watchdog = Watchdog(config, self.mdir, self.rank, self.node, self.recorder, self._on_event)
        self.watchdog.heartbeat("running")
        progress = progress_path(self.rank)
        self.recorder.progress = map_progress(progress)
        self._sentinel = start_sentinel(self.rank, self.mdir, progress)
        self.comm.Barrier()  # every heartbeat exists before anyone watches
        self.watchdog.watch(self._successor())
        trace.set_recorder(self.recorder)
        self.watchdog.start()
        atexit.register(self.close)

    # -- the hot path -------------------------------------------------------------------------

    def section(self, name: str) -> _Section:
        """A timed, recorded user section; its self-time is scored for stragglers."""
        block = self._section_blocks.get(name)
        return block if block is not None else self._section_blocks.setdefault(name, _Section(self, name))

    def step(self, step: Optional[int] = None) -> None:
        """End of a step: injected faults, the step marker, and every ``report_every`` steps the
        straggler window (a collective on the monitor's communicator). ``step``: the number of the
        step ending (from 1), for a job that resumed — records, faults and dumps then count from it."""
        rec = self.recorder
        if step is not None:
            rec.step = step - 1
        if self._faults:
            self._faults.at_step(rec.step)
        now = perf_counter()
        self._work.append(now - self._t_step - (rec.coll_time - self._coll_at_step))
        rec.exit(rec.enter(STEP, "step"))
        rec.step += 1
        rec.progress[STEP_WORD] = rec.step
        if rec.step % self.config.report_every == 0:
            self._report_window()
        self._t_step = perf_counter()
        self._coll_at_step = rec.coll_time

    @property
    def faults(self) -> FaultInjector:
        """This rank's injected faults (a job's compute sections call its ``stretch``)."""
        return self._faults

    def on(self, event: str, callback: Callable[[dict], None]) -> None:
        """Register ``callback(event_dict)`` for ``straggler`` (main thread, every rank alike),
        ``hang`` or ``death`` (the watchdog thread: the main thread may be blocked in MPI)."""
        if event not in EVENTS:
            raise ValueError(f"hpcrt monitor: unknown event {event!r}; expected one of {', '.join(EVENTS)}")
        self._callbacks[event].append(callback)

    # -- straggler windows --------------------------------------------------------------------

    def _report_window(self) -> None:
        rec = self.recorder
        sections = dict(self._sections)
        sections[WORK] = self._work
        summary = summarize(sections, self._window_collectives(), self._best)
        token = trace.trace_collective(EXCHANGE_OP, self.comm, 0)
        try:
            gathered = self.comm.allgather(summary)
        finally:
            trace.trace_done(token)
        for name, median in summary["sections"].items():
            self._best[name] = min(self._best.get(name, median), median)
        scores = score_window(gathered, self.config.min_section_ms / 1e3)
        stragglers = self._tracker.update(scores)
        for entry in scores["ranks"] + stragglers:
            entry["rank"] = self.members[entry["rank"]]
            entry["node"] = self.nodes[entry["rank"]]
        report = {"window": self._window, "steps": [self._window_start, rec.step], "time": time.time(),
                  "stragglers": stragglers, **scores}
        if self.rank == self.members[0]:
            with open(self.mdir.stragglers, "a") as f:
                f.write(json.dumps(report) + "\n")
        self.last_window = report
        self._window += 1
        self._window_start = rec.step
        self._sections = defaultdict(list)
        self._work = []
        for straggler in stragglers:
            self._straggler_actions(straggler, report)

    def _window_collectives(self) -> Dict[str, List[float]]:
        """Time inside each collective op during this window, from the flight recorder."""
        out: Dict[str, List[float]] = defaultdict(list)
        start = self._window_start
        for row, t_exit in zip(self.recorder.rows, self.recorder.exits):
            if row is not None and row[1] == COLLECTIVE and t_exit > 0 and row[6] >= start and row[2] != EXCHANGE_OP:
                out[row[2]].append(t_exit - row[7])
        return out

    def _straggler_actions(self, straggler: dict, report: dict) -> None:
        """Climb one rung of the ladder per window the rank stays a straggler; ``log`` every window."""
        ladder = self.config.straggler_actions
        level = min(straggler["windows"] - self.config.consecutive, len(ladder) - 1)
        event = {**straggler, "report": report}
        for action in ladder[:level + 1]:
            if action == "log":
                if self.rank == self.members[0]:
                    log.warning("straggler: rank %d on node %s, section '%s', relative score %.2f "
                                "(%d windows below %.2f)", straggler["rank"], straggler["node"],
                                straggler["section"], straggler["score"], straggler["windows"],
                                self.config.threshold)
            elif (straggler["rank"], action) not in self._fired:
                self._fired.add((straggler["rank"], action))
                self._act(action, "straggler", event, f"rank {straggler['rank']} is a straggler")

    # -- hangs, deaths, alarms ------------------------------------------------------------------

    def _on_event(self, kind: str, event: dict) -> None:
        """Called by the watchdog thread."""
        if kind == "alarm":
            if event.get("by") != self.rank:
                self._follow_alarm(event)
            return
        if kind == "death" and event["rank"] not in self.members:
            return
        message = _describe_event(kind, event)
        self._append_event(kind, event)
        for action in self._actions_for(kind):
            self._act(action, kind, event, message)

    def _act(self, action: str, kind: str, event: dict, message: str) -> None:
        if action == "log":
            log.error("%s", message)
        elif action == "callback":
            for callback in self._callbacks[kind]:
                try:
                    callback(event)
                except Exception:
                    log.exception("hpcrt monitor: %s callback %r failed", kind, callback)
        elif action == "dump":
            if kind != "straggler":  # every rank takes straggler actions itself; hangs and deaths need telling
                self.mdir.raise_alarm({"kind": kind, "by": self.rank, "node": self.node, "time": time.time(),
                                       "message": message, "event": event})
            self.dump(f"{kind}: {message}")
        elif action == "abort":
            if "dump" in self._actions_for(kind):
                time.sleep(self.config.dump_grace_s)  # the other ranks dump meanwhile
            self.abort(message)

    def _actions_for(self, kind: str) -> List[str]:
        return {"straggler": self.config.straggler_actions, "hang": self.config.hang_actions,
                "death": self.config.death_actions}[kind]

    def _follow_alarm(self, alarm: dict) -> None:
        """Another rank found a hang or a death: dump, and abort later if that rank cannot."""
        actions = self._actions_for(alarm.get("kind", "hang"))
        if "dump" in actions:
            self.dump(f"alarm from rank {alarm.get('by')}: {alarm.get('message')}")
        if "abort" in actions:
            time.sleep(3 * self.config.dump_grace_s)
            self.abort(f"alarm from rank {alarm.get('by')}: {alarm.get('message')}")

    def _append_event(self, kind: str, event: dict) -> None:
        with open(self.mdir.root / "events.jsonl", "a") as f:
            f.write(json.dumps({**event, "kind": kind, "time": time.time(), "by": self.rank}, default=str) + "\n")

    def dump(self, reason: str) -> None:
        """Write this rank's flight recorder and thread stacks to ``<monitor dir>/dumps`` (once)."""
        with self._lock:
            if self._dumped:
                return
            self._dumped = True
        write_dump(self.mdir.dump(self.rank), self.rank, self.node, self.recorder, reason)
        log.warning("hpcrt monitor: dumped the flight recorder and stacks to %s", self.mdir.dump(self.rank))

    def abort(self, message: str) -> None:
        """End the whole job with ``abort_exit_code`` and a clear message."""
        text = (f"hpcrt monitor [rank {self.rank} on {self.node}]: {message}; aborting the job with exit code "
                f"{self.config.abort_exit_code} (dumps and heartbeats in {self.mdir.root}; "
                f"run `hpcrt diagnose {self.mdir.root}`)")
        log.critical("%s", text)
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        time.sleep(FORWARD_GRACE_S)  # let the launcher forward the message before the job is torn down
        abort_world(self.config.abort_exit_code)

    # -- ULFM -----------------------------------------------------------------------------------

    def recover(self, comm: Any) -> Any:
        """Under ULFM, after an MPI error on ``comm``: revoke it, shrink it to the survivors, name
        the dead ranks (``death`` actions short of abort) and return the shrunk communicator.
        Every surviving rank must call it once per failure."""
        shrunk = revoke_and_shrink(comm)
        dead = failed_world_ranks(comm, shrunk)
        revoke_and_shrink(self.comm).Free()
        self.comm = shrunk.Dup()
        self.members = [r for r in self.members if r not in dead]
        self.size = len(self.members)
        self._tracker = StragglerTracker(self.config.threshold, self.config.consecutive)
        self.watchdog.watch(self._successor())
        for rank in dead:
            beat = read_json(self.mdir.heartbeat(rank)) or {}
            event = {"rank": rank, "node": self.nodes[rank], "last_step": beat.get("step"),
                     "survivors": len(self.members), "detected_by": self.rank, "via": "ulfm"}
            message = _describe_event("death", event) + f"; going on with {len(self.members)} ranks"
            if self.rank == self.members[0]:
                self._append_event("death", event)
            for action in self.config.death_actions:
                if action in ("log", "callback"):
                    self._act(action, "death", event, message)
        return shrunk

    def _successor(self) -> Optional[int]:
        if len(self.members) < 2:
            return None
        return self.members[(self.members.index(self.rank) + 1) % len(self.members)]

    # -- shutdown -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the watchdog, mark this rank finished, and detach from the trace hook."""
        if self.closed:
            return
        self.closed = True
        trace.set_recorder(None)
        self.watchdog.stop()
        self.watchdog.heartbeat("finished")
        if self._sentinel.stdin is not None:
            self._sentinel.stdin.close()
        atexit.unregister(self.close)
        try:
            self.comm.Free()
        except Exception:  # a revoked or failed communicator under ULFM
            pass


def _describe_event(kind: str, event: dict) -> str:
    if kind == "hang":
        return (f"hang: rank {event['rank']} on node {event['node']} has been in {event['kind']} "
                f"'{event['op']}' (seq {event['seq']}, {event['comm'] or 'no communicator'} #{event['cseq']}, "
                f"{event['nbytes']} bytes, step {event['step']}) for {event['elapsed_s']:.1f} s "
                f"(timeout {event['timeout_s']:g} s)")
    how = "failed (MPI reported it)" if event.get("via") == "ulfm" else "stopped sending heartbeats"
    return f"death: rank {event['rank']} on node {event['node']} {how} (last step {event.get('last_step')})"


_ACTIVE: List[Monitor] = []


def start(config: MonitorConfig | Mapping[str, Any] | None = None, *, runtime: Any = None) -> Monitor:
    """Start the monitor on every rank (collective; idempotent). ``config`` is a
    :class:`MonitorConfig`, a mapping or a Hydra node; ``HPCRT_MONITOR_*`` and ``HPCRT_FAULT`` override."""
    if _ACTIVE:
        return _ACTIVE[0]
    from hpcrt.core.runtime import get_runtime
    runtime = runtime or get_runtime()
    cfg = resolve_monitor_config(config)
    if cfg.directory:
        directory = agree_run_dir(runtime.comm, cfg.directory)
    else:
        directory = (runtime.run_dir or agree_run_dir(runtime.comm, None)) / "monitor"
    _ACTIVE.append(Monitor(runtime, cfg, directory))
    return _ACTIVE[0]


def get_monitor() -> Optional[Monitor]:
    """The running monitor, or None."""
    return _ACTIVE[0] if _ACTIVE else None


def stop() -> None:
    """Stop the running monitor, if any (collective only in that it frees a communicator)."""
    if _ACTIVE:
        _ACTIVE.pop().close()
