"""The one schedule engine behind the ring and bidirectional-ring collectives.

A *lane* is a direction around the ring and the ``p`` pieces of the flat buffer it carries;
piece ``r`` is the one that ends on rank ``r``. The ring runs one clockwise lane over whole
blocks; the bidirectional ring (from three ranks) halves every block and runs a clockwise and a
counter-clockwise lane at once, each step posting both lanes' non-blocking sends and receives
together so each rank drives both of its links.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from hpcrt._src.backends import get_xp

from .msgpool import Borrowed
from .transport import Transport, wait_all

RING_ALGORITHMS = ("ring", "bidir_ring")
_TAG_BASE = 7100


@dataclass(frozen=True)
class Lane:
    """Pieces ``[start, stop)`` of the flat buffer that travel one way round the ring."""

    direction: int  # +1: to rank + 1 (clockwise); -1: to rank - 1 (counter-clockwise)
    pieces: tuple
    tag: int


def ring_lanes(blocks: list[tuple[int, int]], algorithm: str) -> list[Lane]:
    """The lanes of ``algorithm`` over per-rank ``blocks``.

    ``bidir_ring`` halves each block: the first half (the larger one when odd) goes clockwise,
    the second counter-clockwise. At two ranks both directions lead to the one neighbour, so the
    halves travel together as the ring's one message per step (same bytes, half the messages).
    """
    if algorithm == "ring" or len(blocks) <= 2:
        return [Lane(+1, tuple(blocks), _TAG_BASE)]
    cuts = [(start, start + (stop - start + 1) // 2, stop) for start, stop in blocks]
    return [Lane(+1, tuple((start, middle) for start, middle, _ in cuts), _TAG_BASE + 1),
            Lane(-1, tuple((middle, stop) for _, middle, stop in cuts), _TAG_BASE + 2)]


def ring_pass(transport: Transport, work: Any, lanes: list[Lane], *,
              combine: Optional[Callable[[Any, Any], None]] = None) -> None:
    """Run ``p - 1`` ring steps over ``work`` (a flat array) on every lane at once.

    With ``combine`` it is a reduce-scatter: rank r first sends its piece r - d (d the lane's
    direction), receives into scratch and folds in, and ends holding piece r fully reduced.
    Without, it is an all-gather: rank r first sends its own piece r, receives in place, and ends
    holding every piece. Empty pieces are skipped on both sides.
    """
    p, r = transport.size, transport.rank
    first = 1 if combine is not None else 0
    scratch = {}
    buffers = Borrowed(get_xp(work))
    if combine is not None:
        for lane in lanes:
            scratch[lane.tag] = buffers.take(max(b - a for a, b in lane.pieces) * work.itemsize).view(work.dtype)
    for step in range(p - 1):
        pending, folds = [], []
        for lane in lanes:
            d = lane.direction
            s_start, s_stop = lane.pieces[(r - d * (step + first)) % p]
            r_start, r_stop = lane.pieces[(r - d * (step + first + 1)) % p]
            if r_stop > r_start:
                target = work[r_start:r_stop]
                if combine is not None:
                    incoming = scratch[lane.tag][:r_stop - r_start]
                    folds.append((target, incoming))
                    target = incoming
                pending.append(transport.irecv(target, (r - d) % p, lane.tag))
            if s_stop > s_start:
                pending.append(transport.isend(work[s_start:s_stop], (r + d) % p, lane.tag))
        wait_all(pending)
        for target, incoming in folds:
            combine(target, incoming)
    buffers.give_back()
