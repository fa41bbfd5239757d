"""The Checkpointer's arguments, checked before anything collective happens: levels, keep,
``global_every``, ``max_pending`` and ``collective_timeout_s`` (each bad value one ValueError)."""

from __future__ import annotations

import math
from typing import Optional

from hpcrt.checkpoint.files.levels import LEVELS

DEFAULT_KEEP = {"memory": 1, "local": 2, "partner": 2, "global": 3}
DEFAULT_COLLECTIVE_TIMEOUT_S = 600.0


def check_numbers(global_every: object, max_pending: object, collective_timeout_s: object) -> None:
    """Raise ValueError naming the first argument that is not a positive (finite) number."""
    if not isinstance(global_every, int) or global_every < 1:
        raise ValueError(f"global_every must be a positive integer, got {global_every!r}")
    if not isinstance(max_pending, int) or max_pending < 1:
        raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
    if isinstance(collective_timeout_s, bool) or not isinstance(collective_timeout_s, (int, float)) or \
            not math.isfinite(collective_timeout_s) or collective_timeout_s <= 0:
        raise ValueError(f"collective_timeout_s must be a finite number of seconds > 0, "
                         f"got {collective_timeout_s!r}")


def resolve_levels(levels: Optional[tuple], multi_node: bool) -> tuple:
    """The levels asked for, in LEVELS order (default: all, without ``partner`` on one node)."""
    if levels is None:
        return tuple(lv for lv in LEVELS if multi_node or lv != "partner")
    if isinstance(levels, str):
        levels = (levels,)
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown or not levels:
        raise ValueError(f"checkpoint levels must be a non-empty subset of {LEVELS}, got {levels!r}")
    if "partner" in levels and not multi_node:
        raise ValueError("checkpoint level 'partner' needs ranks on at least two nodes (real, or virtual "
                         "ones from a topology file); this job runs on one")
    return tuple(lv for lv in LEVELS if lv in levels)


def resolve_keep(keep: int | dict, levels: tuple) -> dict:
    """``{level: how many committed steps it keeps}`` for ``levels``."""
    per_level = {lv: keep for lv in LEVELS} if isinstance(keep, int) else {**DEFAULT_KEEP, **keep}
    bad = {lv: k for lv, k in per_level.items() if not isinstance(k, int) or isinstance(k, bool) or k < 1}
    if bad or (isinstance(keep, dict) and set(keep) - set(LEVELS)):
        raise ValueError(f"keep must be a positive int or a dict {{level: positive int}}, got {keep!r}")
    return {lv: per_level[lv] for lv in levels}
