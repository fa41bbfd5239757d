"""The flight recorder: a preallocated ring of the last records (collectives, sections, steps)
of one rank, cheap enough to run on every collective and read by the watchdog at any time."""

from __future__ import annotations

import zlib
from time import perf_counter
from typing import Any, Dict, List, Optional

import numpy as np

COLLECTIVE, SECTION, STEP = 0, 1, 2
KIND_NAMES = ("collective", "section", "step")
ENTERED, COMPLETED = "entered", "completed"
_UNUSED = -1.0

RECORD_DTYPE = np.dtype([("seq", "i8"), ("kind", "i1"), ("op", "U48"), ("comm", "i4"), ("cseq", "i8"),
                         ("nbytes", "i8"), ("step", "i8"), ("t_enter", "f8"), ("t_exit", "f8")])


class FlightRecorder:
    """Records in two preallocated parallel arrays: ``rows[i]`` a tuple written at entry
    ``(seq, kind, op, comm id, per-communicator seq, nbytes, step, t_enter)`` and ``exits[i]``
    the exit time (0.0 while in flight). Times are ``perf_counter`` seconds."""

    def __init__(self, capacity: int):
        size = 1 << max(capacity - 1, 1).bit_length()
        self.capacity = size
        self._mask = size - 1
        self.rows: List[Any] = [None] * size
        self.exits: List[float] = [_UNUSED] * size
        self.seq = 0
        self.step = 0
        self.coll_time = 0.0
        """Seconds spent inside collectives so far (the part of a step that is not this rank's work)."""
        self.comm_counts: List[int] = []
        self.comm_labels: List[dict] = []
        self._comm_ids: Dict[int, tuple] = {}
        self._last_comm: Any = self._comm_ids  # the communicator of the last collective (none yet)
        self._last_cid = -1
        self.depth = 0
        """Collectives entered and not completed (more than one when traced collectives nest)."""
        self.progress: Any = [0, 0]  # a list until the monitor maps the shared words
        """The depth and the step (see :mod:`.progress`); the monitor swaps
        in a shared mapping so the rank's sentinel can read them after the rank dies."""

    def enter(self, kind: int, op: str, comm_id: int = -1, cseq: int = -1, nbytes: int = 0) -> int:
        seq = self.seq
        self.seq = seq + 1
        i = seq & self._mask
        self.exits[i] = 0.0
        self.rows[i] = (seq, kind, op, comm_id, cseq, nbytes, self.step, perf_counter())
        return seq

    def enter_collective(self, op: str, comm: Any, nbytes: int) -> int:
        """:meth:`enter` for a collective on ``comm``, numbered on that communicator too."""
        if comm is self._last_comm:
            cid = self._last_cid
        else:
            entry = self._comm_ids.get(id(comm))
            cid = entry[1] if entry is not None and entry[0] is comm else self._register(comm)
            self._last_comm, self._last_cid = comm, cid
        counts = self.comm_counts
        cseq = counts[cid]
        counts[cid] = cseq + 1
        seq = self.seq
        self.seq = seq + 1
        self.depth = self.progress[0] = self.depth + 1
        i = seq & self._mask
        self.exits[i] = 0.0
        self.rows[i] = (seq, COLLECTIVE, op, cid, cseq, nbytes, self.step, perf_counter())
        return seq

    def exit(self, seq: int) -> float:
        """Mark record ``seq`` (a section or a step) completed; returns its duration."""
        now = perf_counter()
        i = seq & self._mask
        row = self.rows[i]
        if row[0] != seq:  # overwritten by newer records while in flight
            return 0.0
        self.exits[i] = now
        return now - row[7]

    def exit_collective(self, seq: int) -> float:
        """:meth:`exit` for a collective, which also counts its time and leaves the depth one less
        (even when its record was overwritten)."""
        self.depth = self.progress[0] = self.depth - 1
        i = seq & self._mask
        row = self.rows[i]
        if row[0] != seq:
            return 0.0
        now = perf_counter()
        self.exits[i] = now
        elapsed = now - row[7]
        self.coll_time += elapsed
        return elapsed

    def _register(self, comm: Any) -> int:
        """Give ``comm`` a small id and a label that every member rank computes alike."""
        members = _world_ranks(comm)
        key = zlib.crc32(repr(members).encode())
        ordinal = sum(1 for label in self.comm_labels if label["key"] == key)
        cid = len(self.comm_labels)
        self.comm_labels.append({"key": key, "label": f"c{key:08x}.{ordinal}", "size": len(members),
                                 "members": members})
        self.comm_counts.append(0)
        self._comm_ids[id(comm)] = (comm, cid)
        return cid

    def in_flight(self) -> List[tuple]:
        """Rows still entered, oldest first (read by the watchdog thread)."""
        rows, exits = self.rows, self.exits
        open_rows = [rows[i] for i, t in enumerate(exits) if t == 0.0]
        return sorted((r for r in open_rows if r is not None), key=lambda r: r[0])

    def last_completed(self) -> Optional[dict]:
        """The newest completed collective or section, or None."""
        done = [(row, t) for row, t in zip(self.rows, self.exits) if t > 0 and row[1] != STEP]
        return self.describe(*max(done, key=lambda d: d[0][0])) if done else None

    def records(self) -> List[dict]:
        """Every kept record, oldest first, as plain dicts (for dumps)."""
        kept = [(row, t) for row, t in zip(self.rows, self.exits) if row is not None and t != _UNUSED]
        return [self.describe(row, t) for row, t in sorted(kept, key=lambda d: d[0][0])]

    def describe(self, row: tuple, t_exit: float = 0.0) -> dict:
        """A row (and its exit time, 0.0 while in flight) as the dict dumps and heartbeats carry."""
        seq, kind, op, cid, cseq, nbytes, step, t_enter = row
        return {"seq": seq, "kind": KIND_NAMES[kind], "op": op,
                "comm": self.comm_labels[cid]["label"] if cid >= 0 else None, "cseq": cseq, "nbytes": nbytes,
                "step": step, "t_enter": t_enter, "t_exit": t_exit or None,
                "state": COMPLETED if t_exit else ENTERED}

    def to_array(self) -> np.ndarray:
        """The kept records as a numpy structured array (``RECORD_DTYPE``), oldest first."""
        rows = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], t) for r, t in zip(self.rows, self.exits)
                if r is not None and t != _UNUSED]
        return np.sort(np.array(rows, dtype=RECORD_DTYPE), order="seq")

    def counts_by_label(self) -> Dict[str, int]:
        """Collectives entered so far on each communicator."""
        return {label["label"]: count for label, count in zip(self.comm_labels, self.comm_counts)}


def _world_ranks(comm: Any) -> List[int]:
    from mpi4py import MPI
    group = comm.Get_group()
    world = MPI.COMM_WORLD.Get_group()
    try:
        return [int(r) for r in MPI.Group.Translate_ranks(group, list(range(group.Get_size())), world)]
    finally:
        group.Free()
        world.Free()
