"""The watchdog thread of one rank: heartbeats, in-flight timeouts, the ring successor's heartbeat
and the job's alarm. It runs while the main thread is blocked inside MPI (mpi4py releases the GIL
in blocking calls), so a hung rank still reports; a stopped or dead one falls silent."""

from __future__ import annotations

import os
import threading
import time
from time import perf_counter
from typing import Callable, Optional

from hpcrt.core import trace_hook as trace
from hpcrt.core.files import read_json, write_json
from hpcrt.monitor.config import MonitorConfig
from hpcrt.monitor.recorder import COLLECTIVE, FlightRecorder
from hpcrt.monitor.sidechannel import MonitorDir


class Watchdog(threading.Thread):
    """Calls ``on_event(kind, event)`` once per finding: ``hang`` (this rank has an operation in
    flight past its timeout), ``death`` (the watched rank's heartbeat stopped) or ``alarm``
    (another rank raised one)."""

    def __init__(self, config: MonitorConfig, mdir: MonitorDir, rank: int, node: str,
                 recorder: FlightRecorder, on_event: Callable[[str, dict], None]):
        super().__init__(name="hpcrt-watchdog", daemon=True)
        self.config, self.mdir, self.rank, self.node = config, mdir, rank, node
        self.recorder = recorder
        self.on_event = on_event
        self.watched: Optional[int] = None
        """The world rank whose heartbeat this rank watches (its ring successor); None for none."""
        self.beat = 0
        self._beat_lock = threading.Lock()
        """heartbeat() runs on this thread and on the main thread (before an injected stop or kill,
        at close): both write the same file through the same temporary name."""
        self._halt = threading.Event()
        self._reported: set = set()
        self._seen_beat: tuple = (None, -1, time.monotonic())

    def watch(self, rank: Optional[int]) -> None:
        self.watched = rank
        self._seen_beat = (rank, -1, time.monotonic())

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def run(self) -> None:
        poll = min(self.config.heartbeat_interval_s, 0.5)
        while not self._halt.wait(poll):
            self.heartbeat("running")
            self._check_in_flight()
            self._check_watched()
            self._check_alarm()

    def heartbeat(self, state: str) -> None:
        """Publish this rank's liveness, step, current operation and collective counts (one writer at
        a time: two would race on the temporary file, and the loser's rename fails)."""
        rec = self.recorder
        with self._beat_lock:
            self.beat += 1
            open_rows = rec.in_flight()
            write_json(self.mdir.heartbeat(self.rank), {
                "rank": self.rank, "node": self.node, "pid": os.getpid(), "beat": self.beat, "state": state,
                "time": time.time(), "step": rec.step, "counts": rec.counts_by_label(),
                "in_flight": [rec.describe(r) for r in open_rows[-4:]], "last_completed": rec.last_completed()})

    def _check_in_flight(self) -> None:
        now = perf_counter()
        cfg = self.config
        for row in self.recorder.in_flight():
            if row[1] == COLLECTIVE:
                timeout = cfg.collective_timeout_s and trace.timeout_for(self.recorder.describe(row)["op"],
                                                                         cfg.collective_timeout_s)
            else:
                timeout = cfg.section_timeout_s
            if timeout > 0 and now - row[7] > timeout and ("hang", row[0]) not in self._reported:
                self._reported.add(("hang", row[0]))
                event = self.recorder.describe(row)
                event.update(rank=self.rank, node=self.node, elapsed_s=now - row[7], timeout_s=timeout)
                self.on_event("hang", event)

    def _check_watched(self) -> None:
        rank, last_beat, since = self._seen_beat
        if rank is None or rank != self.watched or ("death", rank) in self._reported:
            return
        beat = read_json(self.mdir.heartbeat(rank)) or {}
        now = time.monotonic()
        if beat.get("beat", -1) != last_beat or beat.get("state") == "finished":
            self._seen_beat = (rank, beat.get("beat", -1), now)
        elif now - since > self.config.heartbeat_timeout_s:
            self._reported.add(("death", rank))
            self.on_event("death", {"rank": rank, "node": beat.get("node"), "last_step": beat.get("step"),
                                    "silent_s": now - since, "in_flight": beat.get("in_flight", []),
                                    "detected_by": self.rank})

    def _check_alarm(self) -> None:
        if "alarm" in self._reported or not self.mdir.alarm.exists():
            return
        alarm = read_json(self.mdir.alarm)
        if alarm is not None:
            self._reported.add("alarm")
            self.on_event("alarm", alarm)
