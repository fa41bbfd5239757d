"""The one schedule engine behind the ring and bidirectional-ring collectives.

A *lane* is a direction around the ring and the ``p`` pieces of the flat buffer, piece ``r`` the
one that ends on rank ``r``; a piece travels ``hops`` steps along its lane. The ring runs one
clockwise lane whose pieces travel ``p - 1`` hops. The bidirectional ring (from three ranks) sends
each piece both ways, half the ring round each: the ranks ahead of a piece's owner on one side are
served by the clockwise lane, those on the other side by the counter-clockwise lane, so every step
posts both lanes' sends and receives together, each rank drives both of its links, and a pass
takes ⌊p/2⌋ steps instead of p - 1. At even p the rank opposite a piece's owner is as far
either way: the clockwise lane carries the first half of that piece there, the counter-clockwise
lane the second half, so each direction moves half of the ring's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from hpcrt.backends.arrays import ArrayBackend, backend_of

from hpcrt.collectives.comm.msgpool import Borrowed
from hpcrt.collectives.comm.transport import Transport, wait_all
from hpcrt.core.tags import RING

RING_ALGORITHMS = ("ring", "bidir_ring")


@dataclass(frozen=True)
class Lane:
    """One way round the ring: per rank its piece ``[start, stop)`` of the flat buffer, how many
    ``hops`` a piece travels from its owner, and the part of each piece (``far``) carried on the
    hop that reaches the farthest rank (or, reducing, leaves it)."""

    direction: int  # +1: to rank + 1 (clockwise); -1: to rank - 1 (counter-clockwise)
    pieces: tuple[tuple[int, int], ...]
    far: tuple[tuple[int, int], ...]
    hops: int
    tag: int

    def part(self, piece: int, far_hop: bool) -> tuple[int, int]:
        """Bounds of what this lane moves of ``piece`` on a hop (the ``far`` part on the far one)."""
        return self.far[piece] if far_hop else self.pieces[piece]


def ring_lanes(blocks: list[tuple[int, int]], algorithm: str) -> list[Lane]:
    """The lanes of ``algorithm`` over per-rank ``blocks``.

    ``bidir_ring`` splits the ring in two: each piece goes ⌊(p - 1)/2⌋ hops each way, and at even p
    one more, to the opposite rank, with its first half (the larger one when odd) clockwise and its
    second half counter-clockwise. At two ranks both directions lead to the one neighbour, so it is
    the ring (same bytes, half the messages).
    """
    p, pieces = len(blocks), tuple(blocks)
    if algorithm == "ring" or p <= 2:
        return [Lane(+1, pieces, pieces, p - 1, RING)]
    if p % 2:
        return [Lane(+1, pieces, pieces, p // 2, RING + 1), Lane(-1, pieces, pieces, p // 2, RING + 2)]
    middles = [start + (stop - start + 1) // 2 for start, stop in pieces]
    first = tuple((start, middle) for (start, _), middle in zip(pieces, middles))
    second = tuple((middle, stop) for (_, stop), middle in zip(pieces, middles))
    return [Lane(+1, pieces, first, p // 2, RING + 1), Lane(-1, pieces, second, p // 2, RING + 2)]


def ring_pass(transport: Transport, work: Any, lanes: list[Lane], *,
              combine: Optional[Callable[[Any, Any], None]] = None, backend: Optional[ArrayBackend] = None) -> None:
    """Run every lane's steps over ``work`` (a flat array) at once (lanes share their hop count, as
    :func:`ring_lanes` makes them).

    With ``combine`` it is a reduce-scatter: a piece starts ``hops`` ranks before its owner (with
    its ``far`` part only), and each rank on the way folds the piece it receives into its own and
    passes it on, so rank r ends holding piece r fully reduced. Without, it is an all-gather: rank
    r sends its own piece r, receives in place and passes on, so every rank ends holding every
    piece. Empty parts are skipped on both sides. ``backend`` is work's, where the caller knows it.
    """
    p, r = transport.size, transport.rank
    scratch = {}
    backend = backend or backend_of(work)
    buffers = Borrowed(backend.xp)
    if combine is not None:
        for lane in lanes:
            scratch[lane.tag] = buffers.take(max(b - a for a, b in lane.pieces) * work.itemsize).view(work.dtype)
    hops = lanes[0].hops
    for step in range(hops):
        pending, folds = [], []
        for lane in lanes:
            d = lane.direction
            if combine is not None:
                sent, received, far_hop = r + d * (hops - step), r + d * (hops - step - 1), step == 0
            else:
                sent, received, far_hop = r - d * step, r - d * (step + 1), step == hops - 1
            s_start, s_stop = lane.part(sent % p, far_hop)
            r_start, r_stop = lane.part(received % p, far_hop)
            if r_stop > r_start:
                target = work[r_start:r_stop]
                if combine is not None:
                    incoming = scratch[lane.tag][:r_stop - r_start]
                    folds.append((target, incoming))
                    target = incoming
                pending.append(transport.irecv(target, (r - d) % p, lane.tag, backend))
            if s_stop > s_start:
                pending.append(transport.isend(work[s_start:s_stop], (r + d) % p, lane.tag, backend))
        wait_all(pending)
        for target, incoming in folds:
            combine(target, incoming)
    buffers.give_back()
