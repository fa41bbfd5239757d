"""hpcrt's straggler and fault monitor: a flight recorder of every collective and section, straggler
scores every N steps, hang and death detection with dumps, escalating actions, fault injection.

    mon = hpcrt.monitor.start({"report_every": 50})
    for batch in data:
        with hpcrt.monitor.section("forward"):
            ...
        hpcrt.monitor.step()
    hpcrt.monitor.stop()

After a failure, ``hpcrt diagnose RUN_DIR`` merges the dumps and heartbeats.
"""

from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Optional

from hpcrt.core.ulfm import ulfm_available
from hpcrt.monitor.agent import Monitor, get_monitor, start, stop
from hpcrt.monitor.config import FaultSpec, MonitorConfig, resolve_monitor_config
from hpcrt.monitor.diagnosis import diagnose, format_diagnosis
from hpcrt.monitor.faults import InjectedFault

__all__ = [
    "start",
    "stop",
    "get_monitor",
    "section",
    "step",
    "on",
    "Monitor",
    "MonitorConfig",
    "FaultSpec",
    "InjectedFault",
    "resolve_monitor_config",
    "diagnose",
    "format_diagnosis",
    "measure_recorder_overhead",
    "ulfm_available",
]


def section(name: str) -> ContextManager:
    """``with hpcrt.monitor.section("forward"):`` — timed and recorded; a no-op with no monitor."""
    monitor = get_monitor()
    return monitor.section(name) if monitor is not None else nullcontext()


def step(step: Optional[int] = None) -> None:
    """Mark the end of a step, numbered from 1 when given (see :meth:`Monitor.step`); a no-op with
    no monitor."""
    monitor = get_monitor()
    if monitor is not None:
        monitor.step(step)


def on(event: str, callback: Callable[[dict], Any]) -> None:
    """Register a callback for ``straggler``, ``hang`` or ``death`` on the running monitor."""
    monitor = get_monitor()
    if monitor is None:
        raise RuntimeError("hpcrt monitor: not started; call hpcrt.monitor.start() first")
    monitor.on(event, callback)


def __getattr__(name: str) -> Any:
    """``measure_recorder_overhead`` is imported on first use, so that importing the monitor does not
    load its benchmark (and ``python -m hpcrt.monitor.bench`` runs a module not yet imported)."""
    if name == "measure_recorder_overhead":
        from hpcrt.monitor.bench import measure_recorder_overhead
        return measure_recorder_overhead
    raise AttributeError(f"module 'hpcrt.monitor' has no attribute {name!r}")
