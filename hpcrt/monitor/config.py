"""The monitor's configuration: a dataclass (a Hydra config group like ``RuntimeConfig``) with
``HPCRT_MONITOR_<FIELD>`` environment overrides and ``HPCRT_FAULT`` for fault injection."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional

from hpcrt.core.config import ConfigError, check_env_names, config_as_dict, is_finite_number, parse_env

ACTIONS = ("log", "callback", "dump", "abort", "shrink")
FAULT_KINDS = ("delay", "slow", "stop", "kill", "raise")
FAULT_ITEMS = {"rank": int, "step": int, "ms": float, "factor": float}


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault: ``kind`` on ``rank`` from ``step`` on (``delay`` sleeps ``ms`` every step,
    ``slow`` stretches each compute section to ``factor`` times its measured time)."""

    kind: str
    rank: int
    step: int
    ms: float = 0.0
    factor: float = 1.0

    @classmethod
    def parse(cls, text: str, key: str = "faults") -> "FaultSpec":
        """``delay:rank=2,step=10,ms=5``, ``slow:rank=1,factor=2``, ``stop:rank=1,step=20``, ``kill:...``,
        ``raise:...``."""
        kind, _, rest = text.strip().partition(":")
        if kind not in FAULT_KINDS:
            raise ConfigError(f"hpcrt monitor config key '{key}': fault {text!r} must start with one of "
                              f"{', '.join(FAULT_KINDS)}")
        values: dict = {}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            name, sep, raw = item.partition("=")
            if not sep or name not in FAULT_ITEMS:
                raise ConfigError(f"hpcrt monitor config key '{key}': bad item {item!r} in fault {text!r} "
                                  "(expected rank=, step= and, for delay, ms= or, for slow, factor=)")
            try:
                values[name] = FAULT_ITEMS[name](raw)
            except ValueError:
                raise ConfigError(f"hpcrt monitor config key '{key}': {name}={raw!r} in fault {text!r} "
                                  "is not a number") from None
        if "rank" not in values or values["rank"] < 0 or values.get("step", 0) < 0:
            raise ConfigError(f"hpcrt monitor config key '{key}': fault {text!r} needs rank=R (R >= 0) "
                              "and a non-negative step")
        if kind == "delay" and not (is_finite_number(values.get("ms")) and values["ms"] > 0):
            raise ConfigError(f"hpcrt monitor config key '{key}': delay fault {text!r} needs a finite ms > 0")
        if kind == "slow" and not (is_finite_number(values.get("factor")) and values["factor"] > 1):
            raise ConfigError(f"hpcrt monitor config key '{key}': slow fault {text!r} needs a finite factor > 1")
        return cls(kind, values["rank"], values.get("step", 0), values.get("ms", 0.0), values.get("factor", 1.0))


def parse_faults(text: str, key: str = "faults") -> List[FaultSpec]:
    """Faults separated by ``;`` (the form of ``HPCRT_FAULT``)."""
    return [FaultSpec.parse(part, key) for part in text.split(";") if part.strip()]


@dataclass
class MonitorConfig:
    """Settings of :func:`hpcrt.monitor.start`; every field can be overridden by ``HPCRT_MONITOR_<FIELD>``."""

    capacity: int = 4096
    """Flight-recorder records kept per rank (rounded up to a power of two)."""
    report_every: int = 50
    """Steps per straggler window: medians are exchanged and scored every that many steps."""
    threshold: float = 0.75
    """A rank whose relative score stays below this is a straggler; in (0, 1]."""
    consecutive: int = 2
    """Windows in a row below the threshold before a rank is reported."""
    min_section_ms: float = 1.0
    """Sections whose fastest median is shorter than this are reported but never scored."""
    collective_timeout_s: float = 60.0
    """A collective in flight longer than this is a hang; 0 turns it off."""
    section_timeout_s: float = 0.0
    """A user section in flight longer than this is a hang; 0 turns it off."""
    heartbeat_interval_s: float = 0.5
    heartbeat_timeout_s: float = 10.0
    """A watched rank whose heartbeat has not moved for this long is dead (or stopped)."""
    dump_grace_s: float = 2.0
    """Time left to every rank to dump before the job is aborted."""
    straggler_actions: List[str] = field(default_factory=lambda: ["log", "callback"])
    """A ladder: each further window a rank stays a straggler climbs one action."""
    hang_actions: List[str] = field(default_factory=lambda: ["log", "callback", "dump", "abort"])
    death_actions: List[str] = field(default_factory=lambda: ["log", "callback", "dump", "abort"])
    """Add ``shrink`` (instead of ``abort``) under ULFM to go on with the survivors."""
    abort_exit_code: int = 75
    """Exit code of an abort (75, EX_TEMPFAIL: a batch script may requeue on it)."""
    faults: List[str] = field(default_factory=list)
    """Injected faults (see :class:`FaultSpec`); ``HPCRT_FAULT`` adds to them."""
    directory: Optional[str] = None
    """Where dumps, heartbeats and reports go; default ``<run_dir>/monitor``."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "MonitorConfig":
        """Check every field, raising :class:`ConfigError` naming the first bad key."""
        for key in ("capacity", "report_every", "consecutive"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                _bad(key, "a positive integer", value)
        if not is_finite_number(self.threshold) or not 0 < self.threshold <= 1:
            _bad("threshold", "a number in (0, 1]", self.threshold)
        for key in ("min_section_ms", "collective_timeout_s", "section_timeout_s", "dump_grace_s"):
            value = getattr(self, key)
            if not is_finite_number(value) or value < 0:
                _bad(key, "a finite non-negative number of " + ("ms" if key.endswith("ms") else "seconds"), value)
        for key in ("heartbeat_interval_s", "heartbeat_timeout_s"):
            value = getattr(self, key)
            if not is_finite_number(value) or value <= 0:
                _bad(key, "a finite positive number of seconds", value)
        if self.heartbeat_timeout_s < 2 * self.heartbeat_interval_s:
            _bad("heartbeat_timeout_s", f"at least twice heartbeat_interval_s ({self.heartbeat_interval_s})",
                 self.heartbeat_timeout_s)
        for key in ("straggler_actions", "hang_actions", "death_actions"):
            actions = getattr(self, key)
            if isinstance(actions, str) or not all(a in ACTIONS for a in actions):
                _bad(key, f"a list of {', '.join(ACTIONS)}", actions)
        if "shrink" in self.straggler_actions + self.hang_actions:
            _bad("straggler_actions" if "shrink" in self.straggler_actions else "hang_actions",
                 "no 'shrink' (only death_actions can shrink)", "shrink")
        if not isinstance(self.abort_exit_code, int) or not 0 < self.abort_exit_code < 256:
            _bad("abort_exit_code", "an integer in 1..255", self.abort_exit_code)
        for text in self.faults:
            FaultSpec.parse(text)
        return self

    def fault_specs(self, size: Optional[int] = None) -> List[FaultSpec]:
        """The parsed faults; with the job's ``size``, a fault on a rank the job does not have is an
        error (it would never fire, and the test or demo relying on it would pass for nothing)."""
        specs = [FaultSpec.parse(text) for text in self.faults]
        for spec, text in zip(specs, self.faults):
            if size is not None and spec.rank >= size:
                raise ConfigError(f"hpcrt monitor config key 'faults' (or HPCRT_FAULT): fault {text.strip()!r} "
                                  f"names rank {spec.rank}, but the job has ranks 0..{size - 1}")
        return specs


def _bad(key: str, expected: str, got: Any) -> None:
    raise ConfigError(f"hpcrt monitor config key '{key}': expected {expected}, got {got!r}")


def resolve_monitor_config(config: MonitorConfig | Mapping[str, Any] | None = None,
                           environ: Mapping[str, str] | None = None) -> MonitorConfig:
    """Merge defaults, the given config (dataclass, dict or OmegaConf node) and the environment."""
    environ = os.environ if environ is None else environ
    check_env_names(environ, "HPCRT_MONITOR_", MonitorConfig)
    values = config_as_dict(config, MonitorConfig, "hpcrt monitor config")
    for name in (f.name for f in dataclasses.fields(MonitorConfig)):
        raw = environ.get(f"HPCRT_MONITOR_{name.upper()}")
        if raw is None:
            continue
        default = MonitorConfig.__dataclass_fields__[name]
        sample = default.default_factory() if callable(default.default_factory) else default.default
        values[name] = _from_env(name, raw, sample)
    if environ.get("HPCRT_FAULT"):
        parse_faults(environ["HPCRT_FAULT"], key="HPCRT_FAULT")
        values["faults"] = list(values.get("faults", [])) + _split(environ["HPCRT_FAULT"], ";")
    return MonitorConfig(**values)


def _from_env(name: str, raw: str, sample: Any) -> Any:
    if isinstance(sample, list):
        return _split(raw, ";" if name == "faults" else ",")
    if isinstance(sample, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"environment variable HPCRT_MONITOR_{name.upper()}: expected a number, "
                              f"got {raw!r}") from None
    return parse_env(f"monitor_{name}", raw, type(sample) if isinstance(sample, (bool, int)) else str)


def _split(raw: str, sep: str) -> List[str]:
    return [item.strip() for item in raw.split(sep) if item.strip()]
