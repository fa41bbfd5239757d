"""The core hook through which collectives reach the flight recorder without importing the monitor.

Call pattern for every collective (a tuple store, plus a dict lookup when the communicator differs
from the last one, when a monitor runs; a global read and a comparison when none does)::

    from hpcrt.core.trace_hook import trace_collective, trace_done

    token = trace_collective("allreduce", comm, nbytes)   # before the first MPI call
    try:
        ...                                               # the collective's MPI calls
    finally:
        trace_done(token)                                 # marks it completed, even on error

``op`` is a short constant name, ``comm`` the mpi4py communicator the collective runs on (its
k-th traced collective must be the same operation on every member rank), ``nbytes`` this rank's
payload. A collective that fails leaves no "entered" record behind only if ``trace_done`` runs.
``_recorder`` is None when no monitor runs: a caller may then skip working out ``comm`` and
``nbytes`` (as the collectives' ``traced`` decorator does).
"""

from __future__ import annotations

from typing import Any, Optional

_recorder: Optional[Any] = None
_timeouts: dict = {}
"""Per operation-name prefix, the time a collective of it may take before it is a hang, where
its owner bounds it itself and allows longer than the monitor's collective_timeout_s (the
checkpointer: a vote waits for the slowest rank's file write)."""


def allow_longer(prefix: str, seconds: float) -> None:
    """Collectives whose op starts with ``prefix`` are hangs only after ``seconds`` (at least)."""
    _timeouts[prefix] = max(seconds, _timeouts.get(prefix, 0.0))


def timeout_for(op: str, default: float) -> float:
    """The hang timeout of collective ``op``: ``default`` unless its owner allowed longer."""
    return max([default] + [seconds for prefix, seconds in _timeouts.items() if op.startswith(prefix)])


def set_recorder(recorder: Optional[Any]) -> None:
    """Install (or, with None, remove) the flight recorder the hooks write to."""
    global _recorder
    _recorder = recorder


def trace_collective(op: str, comm: Any, nbytes: int) -> int:
    """Record that this rank enters collective ``op`` on ``comm``; returns the token for :func:`trace_done`."""
    recorder = _recorder
    if recorder is None:
        return -1
    return recorder.enter_collective(op, comm, nbytes)


def trace_done(token: int) -> None:
    """Record that the collective of ``token`` completed on this rank."""
    recorder = _recorder
    if token >= 0 and recorder is not None:
        recorder.exit_collective(token)
