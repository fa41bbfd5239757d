"""The runtime's configuration: one dataclass schema, usable as a Hydra config group
and by plain scripts, with ``HPCRT_*`` environment overrides for launch scripts."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

DEVICE_CHOICES = ("auto", "cpu", "gpu")
CUDA_AWARE_CHOICES = ("auto", "yes", "no")
THREAD_LEVELS = ("single", "funneled", "serialized", "multiple")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """An invalid runtime setting; the message names the key and what was expected."""


@dataclass
class RuntimeConfig:
    """Settings of :func:`hpcrt.init`; every field can be overridden by ``HPCRT_<FIELD>``."""

    device: str = "auto"
    """``auto`` (GPU ``local_rank % ngpus`` when CuPy sees one), ``cpu`` or ``gpu``."""
    cuda_aware: str = "auto"
    """Hand GPU buffers straight to MPI: ``yes``, ``no``, or ``auto`` (probe of the MPI library)."""
    topology_file: Optional[str] = None
    """YAML file overriding topology discovery (virtual nodes, NIC classes, link costs)."""
    run_dir: Optional[str] = None
    """The job's directory, agreed by all ranks; default ``hpcrt-runs/<job id>``."""
    log_level: str = "INFO"
    log_files: bool = True
    """Write every rank's log to ``<run_dir>/logs/rank-NNNNN.log``."""
    thread_level: str = "multiple"
    """MPI thread level requested when hpcrt is the one that initializes MPI."""
    abort_on_error: bool = True
    """Abort the whole job when one rank dies of an exception or a non-zero exit."""
    staging_pool_mb: int = 256
    """Upper bound of the pinned host pool used to stage GPU buffers for MPI."""
    keep_freed_mb: int = 1024
    """Have glibc's malloc serve large blocks from the heap and keep up to this much freed memory
    at its top for reuse, so repeated large collectives do not page-fault; 0 leaves malloc as it is
    (malloc takes at most 2047)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "RuntimeConfig":
        """Check every field, raising :class:`ConfigError` naming the first bad key."""
        _check_choice("device", self.device, DEVICE_CHOICES)
        _check_choice("cuda_aware", self.cuda_aware, CUDA_AWARE_CHOICES)
        _check_choice("thread_level", self.thread_level, THREAD_LEVELS)
        _check_choice("log_level", str(self.log_level).upper(), LOG_LEVELS)
        _check_int("staging_pool_mb", self.staging_pool_mb, 1)
        _check_int("keep_freed_mb", self.keep_freed_mb, 0)
        for key in ("log_files", "abort_on_error"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"hpcrt config key '{key}': expected true or false, "
                                  f"got {getattr(self, key)!r}")
        return self


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite: a NaN timeout compares false
    with everything, so it would silently turn a check off."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"hpcrt config key '{key}': expected an integer >= {minimum}, got {value!r}")


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"hpcrt config key '{key}': expected one of {', '.join(choices)}, got {value!r}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_env(key: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"environment variable HPCRT_{key.upper()}: expected 1/0/true/false, got {raw!r}")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"environment variable HPCRT_{key.upper()}: expected an integer, "
                              f"got {raw!r}") from None
    return raw


NON_CONFIG_ENV = ("HPCRT_FAULT", "HPCRT_SRUN_MPI")
"""``HPCRT_*`` variables that are no runtime config key: the monitor's fault injection, the PMI
plugin the Slurm templates pass to ``srun``."""
OTHER_ENV_PREFIXES = ("HPCRT_MONITOR_", "HPCRT_TEST_")
"""Names owned elsewhere: the monitor checks its own; the test suite's switches."""


def check_env_names(environ: Mapping[str, str], prefix: str, schema: type,
                    others: tuple = (), other_prefixes: tuple = ()) -> None:
    """Raise :class:`ConfigError` naming a ``<prefix>*`` variable that is neither a field of the
    dataclass ``schema`` nor one of ``others``: a mistyped name would otherwise be ignored."""
    known = [prefix + f.name.upper() for f in dataclasses.fields(schema)]
    for name in sorted(environ):
        if name.startswith(prefix) and name not in known and name not in others \
                and not name.startswith(other_prefixes):
            close = difflib.get_close_matches(name, known + list(others), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"environment variable {name} is unknown: {hint}known: {', '.join(known + list(others))}")


def _field_kind(f: dataclasses.Field) -> type:
    """The type an environment string converts to: that of the field's default."""
    return type(f.default) if isinstance(f.default, (bool, int)) else str


def resolve_config(config: RuntimeConfig | Mapping[str, Any] | None = None,
                   environ: Mapping[str, str] | None = None) -> RuntimeConfig:
    """Merge defaults, the given config (dataclass, dict or OmegaConf node) and ``HPCRT_*`` variables.

    The environment wins: launch scripts set what the job's own config cannot know.
    """
    environ = os.environ if environ is None else environ
    check_env_names(environ, "HPCRT_", RuntimeConfig, NON_CONFIG_ENV, OTHER_ENV_PREFIXES)
    values = config_as_dict(config, RuntimeConfig, "hpcrt config")
    for name, f in {f.name: f for f in dataclasses.fields(RuntimeConfig)}.items():
        raw = environ.get(f"HPCRT_{name.upper()}")
        if raw is not None:
            values[name] = parse_env(name, raw, _field_kind(f))
    if "log_level" in values:
        values["log_level"] = str(values["log_level"]).upper()
    return RuntimeConfig(**values)


def config_as_dict(config: Any, schema: type, what: str) -> dict:
    """The settings of ``config`` — an instance of the dataclass ``schema``, a mapping, an OmegaConf
    node from a Hydra job, or None — as a plain dict; ``what`` names the config in errors, which
    include a key ``schema`` does not have."""
    if config is None:
        return {}
    if isinstance(config, schema):
        return dataclasses.asdict(config)
    if hasattr(config, "_metadata"):  # an OmegaConf node
        from omegaconf import OmegaConf
        values = dict(OmegaConf.to_container(config, resolve=True))
    elif isinstance(config, Mapping):
        values = dict(config)
    else:
        raise ConfigError(f"{what}: expected a {schema.__name__} or a mapping, got {type(config).__name__}")
    known = [f.name for f in dataclasses.fields(schema)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{what} key '{unknown[0]}' is unknown; known keys: {', '.join(known)}")
    return values
