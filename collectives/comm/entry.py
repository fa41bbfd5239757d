"""The one entry sequence of every collective: the communicator resolved (and its transport reused),
the local checks, the agreement across ranks, and an error raised on every rank.

The agreement is one Allreduce of 8 bytes: a stable 32-bit hash ``h`` of the call's fields (shape,
dtype, op, algorithm, this rank's input error, ...) and ``~h``, two int32 reduced with MIN, which
give min(h) and ~max(h), so every rank sees whether they all agree. 8 bytes, not two 64-bit words:
MPI's small Allreduce costs half as much again at 16 bytes; calls that differ go unnoticed only
where their hashes collide (2⁻³² of them). Only where the ranks differ does a second, slower round
(:func:`check_agreement`'s allgather) name the fields, the ranks and what each has.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional

import numpy as np
from mpi4py import MPI

from hpcrt.backends.arrays import ArrayBackend, backend_of
from hpcrt.core.runtime import get_runtime

from hpcrt.collectives.comm.agreement import CollectiveMismatchError, check_agreement
from hpcrt.collectives.comm.transport import Transport

_MAX_ENTRIES = 4096
"""Entries a cache keeps before it starts over."""
_TRANSPORTS: dict = {}


class CallCache:
    """What repeated calls of one shape reuse, by key: ``make(*args)`` on the key's first call (kept
    even where it is None), the cache started over when full; an unhashable key is made uncached."""

    def __init__(self, make: Callable[..., Any]):
        self._make = make
        self._known: dict = {}

    def get(self, key: Any, *args: Any) -> Any:
        try:
            return self._known[key]
        except KeyError:
            return _remember(self._known, key, self._make(*args))
        except TypeError:
            return self._make(*args)


def _remember(known: dict, key: Any, value: Any) -> Any:
    """``value`` kept under ``key`` in ``known``, which starts over when full."""
    if len(known) >= _MAX_ENTRIES:
        known.clear()
    known[key] = value
    return value


def planned(transport: Transport, key: Any, make: Callable[..., Any], *args: Any) -> Any:
    """The plan of ``key`` on ``transport``: ``make(*args)``, made once per key and communicator
    (uncached where the key is unhashable). A call of a shape seen before reads
    ``transport.plans[key]`` itself, inline (a function call costs as much as the lookup), and
    comes here on a miss."""
    try:
        hash(key)
    except TypeError:
        return make(*args)
    return _remember(transport.plans, key, make(*args))


def transport_for(comm: Optional[Any], collective: str) -> Transport:
    """The transport of ``comm`` (the runtime's where None), made once per communicator and runtime;
    TypeError as :func:`.transport.intracomm` words it for anything but an intracommunicator."""
    known = _TRANSPORTS.get(id(comm))
    runtime = get_runtime()
    if known is not None and known[0] is comm and known[1] is runtime:
        return known[2]
    transport = Transport(comm, collective)
    _remember(_TRANSPORTS, id(comm), (comm, runtime, transport))  # holding comm keeps its id from being reused
    return transport


def mpi_datatype(dtype: np.dtype) -> Optional[MPI.Datatype]:
    """MPI's predefined datatype for a native numpy ``dtype``, as mpi4py infers it from an array, or
    None: a call that names it (``[array, count, datatype]``) skips mpi4py's inference each time."""
    if not dtype.isnative:
        return None
    try:
        return MPI.Datatype.fromcode(dtype.char)
    except ValueError:
        return None


def signature(collective: str, fields: dict) -> bytes:
    """``[h, ~h]`` as two native int32 (8 bytes) of the call's fields (the same on every rank for the same call)."""
    key = (collective, *fields.items())
    return _SIGNATURES.get(key, key)


def _signed(key: tuple) -> bytes:
    h = int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=4).digest(), "little", signed=True)
    return np.array([h, ~h], dtype=np.int32).tobytes()


_SIGNATURES = CallCache(_signed)


def agree(comm: Any, collective: str, signed: bytes, fields: dict, problem: Optional[Exception] = None) -> None:
    """Raise :class:`CollectiveMismatchError` on every rank unless all ranks passed the same signature
    (one 8-byte Allreduce, of bytes with an explicit count and type: mpi4py's quickest buffer form;
    on a mismatch a second round names the ranks and fields that differ, ``problem`` being this rank's
    input error)."""
    reduced = bytearray(8)
    comm.Allreduce([signed, 2, MPI.INT32_T], [reduced, 2, MPI.INT32_T], MPI.MIN)
    if reduced != signed:
        check_agreement(comm, collective, **_with_error(fields, problem))
        raise CollectiveMismatchError(f"{collective}: ranks called it with different arguments, though "
                                      f"every field listed agrees (seen on rank {comm.rank})")


def _with_error(fields: dict, problem: Optional[Exception]) -> dict:
    """``fields`` led by this rank's input error (None where it has none), as the ranks compare them."""
    return {"input_error": None if problem is None else str(problem), **fields}


def begin(comm: Any, collective: str, problem: Optional[Exception], fields: dict, validate: bool,
          signed: Optional[bytes] = None) -> None:
    """The entry sequence once the local checks ran: with ``validate`` the ranks agree on ``fields``
    and on ``problem`` (this rank's input error, or None; ``signed``: the signature of both, where
    the caller has it already), so a rank's bad input is every rank's error; then ``problem``,
    where there is one, is raised."""
    if validate:
        if signed is None:
            signed = signature(collective, _with_error(fields, problem))
        agree(comm, collective, signed, fields, problem)
    if problem is not None:
        raise problem.with_traceback(None)  # a cached plan's error: a fresh traceback each call


def checked_out(collective: str, out: Any, shape: tuple, dtype: Any, backend: ArrayBackend, *, name: str = "out",
                like: str = "x", contiguous_for: Optional[str] = "") -> Optional[Exception]:
    """What keeps ``out`` (called ``name``) from taking a result of ``shape`` and ``dtype`` on
    ``backend``, or None: same backend (as ``like``), shape and dtype; writable; C-contiguous unless
    ``contiguous_for`` is None (the text naming what writes it flat, appended to the error)."""
    try:
        got = backend_of(out).name
    except TypeError:
        got = type(out).__name__
    if got != backend.name:
        return TypeError(f"{collective}: {name} must be a {backend.name} array like {like}, got {got}")
    if tuple(out.shape) != tuple(shape):
        return ValueError(f"{collective}: {name} must have the result's shape {tuple(shape)}, got {tuple(out.shape)}")
    if out.dtype != dtype:
        return TypeError(f"{collective}: {name} must have the result's dtype {dtype}, got {out.dtype}")
    if contiguous_for is not None and not out.flags.c_contiguous:
        return ValueError(f"{collective}: {name} must be C-contiguous{contiguous_for}")
    if not getattr(out.flags, "writeable", True):  # CuPy arrays have no such flag: always writable
        return ValueError(f"{collective}: {name} is read-only")
    return None


def raise_on_every_rank(collective: str, problems: list) -> None:
    """Given every rank's problem ((exception type, message) or None, gathered), raise them all on
    every rank alike, as the exception type of the first rank with one."""
    bad = [(rank, problem) for rank, problem in enumerate(problems) if problem]
    if bad:
        error = bad[0][1][0]
        raise error(f"{collective}: " + "; ".join(f"rank {rank}: {message}" for rank, (_, message) in bad))
