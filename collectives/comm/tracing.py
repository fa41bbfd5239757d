"""Every hpcrt collective reports itself to the flight recorder through the core trace hook
(a no-op when no monitor runs), from before its argument check to its last message."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

from hpcrt.core import trace_hook as trace
from hpcrt.core.runtime import get_runtime
from hpcrt.core.trace_hook import trace_collective, trace_done


def payload_bytes(*arrays: Any) -> int:
    """Bytes of the array arguments (pairs such as the affine op's (a, b) count both parts)."""
    total = 0
    for a in arrays:
        total += payload_bytes(*a) if isinstance(a, (tuple, list)) else getattr(a, "nbytes", 0)
    return total


def enter(op: str, comm: Optional[Any], nbytes: int) -> int:
    """Record that this rank enters ``op`` on ``comm`` (default: the runtime's); pass the token to trace_done."""
    return trace_collective(op, comm if comm is not None else get_runtime().comm, nbytes)


def call_traced(op: str, comm: Optional[Any], nbytes: int, collective: Callable, *args: Any) -> Any:
    """``collective(*args)`` recorded as ``op`` of ``nbytes`` on ``comm`` (default: the runtime's), from
    its start to its end, even where it raises."""
    token = enter(op, comm, nbytes)
    try:
        return collective(*args)
    finally:
        trace_done(token)


def traced(op: str) -> Callable:
    """Decorate a blocking collective ``f(*arrays, comm=None, ...)`` so each call is recorded
    (with no monitor running, the call goes straight through: no payload count, no comm lookup)."""
    def decorate(collective: Callable) -> Callable:
        @functools.wraps(collective)
        def call(*args: Any, **kwargs: Any) -> Any:
            if trace._recorder is None:
                return collective(*args, **kwargs)
            return call_traced(op, kwargs.get("comm"), payload_bytes(*args), functools.partial(collective, **kwargs),
                               *args)
        return call
    return decorate
