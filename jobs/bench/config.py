"""The bench job's settings: the ``bench`` node of ``conf/bench.yaml`` checked into a dataclass,
every bad value a :class:`hpcrt.ConfigError` naming its key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from hpcrt import ConfigError

DTYPES = ("float32", "float64", "int32", "int64")
BUFFERS = ("numpy", "cupy", "fakegpu")
LINK_COSTS = ("measured", "nominal")
TIMINGS = ("loop", "per_call")
LARGE_MESSAGE = 64 << 10
"""Above this size a message is large (OSU's split): ``iters_large`` timed calls instead of ``iters``,
and proportionally fewer warm-up calls (at least one)."""


@dataclass(frozen=True)
class BenchSettings:
    """What to run, at which sizes, how often, on which buffers."""

    collectives: tuple[str, ...]
    algorithms: dict[str, tuple[str, ...] | None]
    """Per collective the algorithms asked for; None means every one available."""
    ops: tuple[str, ...]
    sizes: tuple[int, ...]
    warmup: int
    iters: int
    iters_large: int
    dtype: str
    buffers: str
    validate: bool
    arg_check: bool
    link_costs: str
    timing: str
    """``loop``: back-to-back calls timed together (nccl-tests); ``per_call``: each call timed alone
    with a barrier between calls (OSU's collective latency tests), so no call overlaps the next."""
    suites: tuple[str, ...]
    """Benchmarks beyond collectives to run after them (see :mod:`.bench_suites`)."""

    def warmup_for(self, nbytes: int) -> int:
        """OSU-style: fewer warm-up calls for large messages."""
        if nbytes <= LARGE_MESSAGE or self.warmup == 0:
            return self.warmup
        return max(1, self.warmup * LARGE_MESSAGE // nbytes)

    def iters_for(self, nbytes: int) -> int:
        """OSU-style: many timed calls for small messages (amortizing timer and scheduling noise)."""
        return self.iters if nbytes <= LARGE_MESSAGE else self.iters_large


def message_sizes(min_bytes: int, max_bytes: int, factor: int) -> tuple[int, ...]:
    """``min_bytes``, ×``factor``, … up to ``max_bytes`` (nccl-tests' ``-b -e -f``), and ``max_bytes``
    itself when the steps pass it by (8 B ×4 reaches 8 MiB, then 64 MiB, not 32 MiB)."""
    sizes = [min_bytes]
    while sizes[-1] * factor <= max_bytes:
        sizes.append(sizes[-1] * factor)
    if sizes[-1] < max_bytes:
        sizes.append(max_bytes)
    return tuple(sizes)


def _key(name: str) -> str:
    return f"bench config key '{name}'"


def _int(raw: Mapping[str, Any], name: str, minimum: int) -> int:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{_key(name)}: expected an integer >= {minimum}, got {value!r}")
    return value


def _choice(raw: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = raw.get(name)
    if value not in choices:
        raise ConfigError(f"{_key(name)}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _bool(raw: Mapping[str, Any], name: str) -> bool:
    value = raw.get(name)
    if not isinstance(value, bool):
        raise ConfigError(f"{_key(name)}: expected true or false, got {value!r}")
    return value


def _names(value: Any, name: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """A name or a non-empty list of names, each one of ``known``; duplicates dropped."""
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{_key(name)}: expected a non-empty list of {', '.join(known)}, got {value!r}")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ConfigError(f"{_key(name)}: unknown name {unknown[0]!r}; known: {', '.join(known)}")
    return tuple(dict.fromkeys(value))


def _algorithms(raw: Mapping[str, Any], collectives: tuple[str, ...],
                known: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...] | None]:
    """``all`` (or absent) → None; otherwise the listed names, each one known for its collective."""
    table = raw.get("algorithms") or {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{_key('algorithms')}: expected a mapping from collective to a list, got {table!r}")
    stray = sorted(set(table) - set(known))
    if stray:
        raise ConfigError(f"{_key('algorithms.' + stray[0])}: not a collective; known: {', '.join(known)}")
    chosen: dict[str, tuple[str, ...] | None] = {}
    for name in collectives:
        value = table.get(name, "all")
        chosen[name] = None if value == "all" else _names(value, f"algorithms.{name}", known[name])
    return chosen


def parse_settings(raw: Mapping[str, Any], known_algorithms: Mapping[str, tuple[str, ...]],
                   known_ops: tuple[str, ...], known_suites: tuple[str, ...] = ()) -> BenchSettings:
    """Check the ``bench`` config node against the collectives, ops and suites the job knows.

    ``collectives`` may be empty when ``suites`` names something to run.
    """
    suites = _names(raw["suites"], "suites", known_suites) if raw.get("suites") else ()
    collectives = () if suites and not raw.get("collectives") else \
        _names(raw.get("collectives"), "collectives", tuple(known_algorithms))
    min_bytes = _int(raw, "min_bytes", 1)
    max_bytes = _int(raw, "max_bytes", 1)
    if min_bytes > max_bytes:
        raise ConfigError(f"{_key('min_bytes')}: must not exceed max_bytes ({max_bytes}), got {min_bytes}")
    factor = _int(raw, "factor", 2)
    dtype = _choice(raw, "dtype", DTYPES)
    return BenchSettings(
        collectives=collectives,
        algorithms=_algorithms(raw, collectives, known_algorithms),
        ops=_names(raw.get("ops"), "ops", known_ops),
        sizes=message_sizes(max(min_bytes, np.dtype(dtype).itemsize), max_bytes, factor),
        warmup=_int(raw, "warmup", 0),
        iters=_int(raw, "iters", 1),
        iters_large=_int(raw, "iters_large", 1),
        dtype=dtype,
        buffers=_choice(raw, "buffers", BUFFERS),
        validate=_bool(raw, "validate"),
        arg_check=_bool(raw, "arg_check"),
        link_costs=_choice(raw, "link_costs", LINK_COSTS),
        timing=_choice(raw, "timing", TIMINGS),
        suites=suites,
    )
