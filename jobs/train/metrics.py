"""What rank 0 tells the user while the job runs: one JSON line per step in ``metrics.jsonl``
(kept consistent across a resume), and a progress bar on a terminal or a log line every few steps."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ContextManager, Iterator

from hpcrt.jobs.train.balance import COMPUTE, COMPUTE_SECTIONS

log = logging.getLogger("hpcrt.jobs.train")

SECTIONS = ("forward", "scan", "backward", "grad_sync", "optimizer", "checkpoint")


class StepTimer:
    """Seconds per section of the current step, each section also recorded by the ``monitor`` (when
    on), whose injected ``slow`` fault stretches each compute section's self-time (its time less
    the collectives inside it) from within the section."""

    def __init__(self, monitor: Any = None):
        self._monitor = monitor
        self.seconds: dict = dict.fromkeys(SECTIONS, 0.0)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time ``name`` (adding to earlier visits in this step)."""
        start = time.perf_counter()
        if self._monitor is None:
            yield
        else:
            recorder = self._monitor.recorder
            with self._monitor.section(name):
                inside = recorder.coll_time
                yield
                if name in COMPUTE_SECTIONS:
                    self._monitor.faults.stretch(time.perf_counter() - start - (recorder.coll_time - inside))
        self.seconds[name] += time.perf_counter() - start

    def compute(self) -> ContextManager:
        """A step's forward and backward together as the monitor's ``compute`` section (not in the
        step's row, whose sections it would count twice): what a rebalance reads."""
        return self._monitor.section(COMPUTE) if self._monitor is not None else nullcontext()

    def take(self) -> dict:
        """This step's seconds per section; the next step starts from zero."""
        taken, self.seconds = self.seconds, dict.fromkeys(SECTIONS, 0.0)
        return taken


def read_metrics(path: Path) -> list[dict]:
    """Every step recorded in ``path`` (none when it does not exist); a damaged line (a node that
    died mid-write) is skipped with a warning rather than stopping every later resume."""
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            row = None
            log.warning("%s line %d is damaged; skipped", path, number)
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


class MetricsLog:
    """``metrics.jsonl`` on rank 0 (a no-op elsewhere). On resume from step s, lines past s — steps
    a killed job ran but never committed — are dropped, so each step appears once."""

    def __init__(self, path: Path, leader: bool, resumed_from: int, total: int, every: int):
        self.leader, self.total, self.every = leader, total, every
        self.started = time.perf_counter()
        self.first = resumed_from
        self._bar = leader and sys.stdout.isatty()
        self._file: Any = None
        if leader:
            kept = [row for row in read_metrics(path) if row["step"] <= resumed_from]
            path.write_text("".join(json.dumps(row) + "\n" for row in kept))
            self._file = open(path, "a")

    def record(self, row: dict) -> None:
        """Write one step's row and show progress."""
        if not self.leader:
            return
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        step = row["step"]
        done = step - self.first
        eta = (time.perf_counter() - self.started) / done * (self.total - step)
        text = (f"step {step}/{self.total}  loss {row['loss']:.4f}  {row['tokens_per_s']:,.0f} tok/s  "
                f"{row['step_s'] * 1e3:.1f} ms/step  ETA {_clock(eta)}")
        if self._bar:
            filled = int(30 * step / self.total)
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}", end="" if step < self.total else "\n",
                  flush=True)
        elif step % self.every == 0 or step == self.total:
            log.info(text)

    def close(self) -> None:
        """Close the file (rank 0)."""
        if self._file is not None:
            self._file.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
