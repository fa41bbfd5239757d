"""How an All-Scan state (a tuple of arrays) splits into row blocks and packs into one byte
message per block, so each block costs one message whatever the number of arrays."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcrt.collectives.comm.blocks import block_bounds

_MAX_PLACEMENTS = 4096
"""Block placements a layout keeps before it starts over (one per block row count in use)."""


@dataclass(frozen=True)
class ScanLayout:
    """Shapes and dtypes of a state's arrays and which of them split along the first axis.

    Arrays that broadcast along the first axis (fewer dimensions, or a first axis of 1 where
    the state has more rows) are *shared*: they travel whole, once, in block 0's message.
    Inside a message the arrays lie by decreasing item size, so every view is aligned.
    """

    shapes: tuple
    dtypes: tuple
    rows: int
    row_split: tuple

    @staticmethod
    def of(parts: tuple, rowwise: bool) -> "ScanLayout":
        """The layout of ``parts``; a state whose op is not ``rowwise`` never splits (one block)."""
        return _layout(tuple(part.shape for part in parts), tuple(part.dtype for part in parts), rowwise)

    @functools.cached_property
    def nbytes(self) -> int:
        return sum(math.prod(shape) * dtype.itemsize for shape, dtype in zip(self.shapes, self.dtypes))

    @functools.cached_property
    def alignment(self) -> int:
        """The largest item size: a message starting at a multiple of it has every view aligned."""
        return max(dtype.itemsize for dtype in self.dtypes)

    def aligned(self, nbytes: int) -> int:
        """``nbytes`` rounded up to a multiple of :attr:`alignment`."""
        return -(-nbytes // self.alignment) * self.alignment

    def bounds(self, blocks: int) -> list:
        """``blocks`` balanced (lo, hi) row ranges covering the first axis."""
        return block_bounds(self.rows, blocks)

    def _block_shapes(self, lo: int, hi: int, first: bool) -> list:
        """Per array, its shape inside the block's message, or None when the block omits it."""
        return [(hi - lo, *shape[1:]) if split else (shape if first else None)
                for shape, split in zip(self.shapes, self.row_split)]

    @functools.cached_property
    def _placements(self) -> dict:
        return {}

    def _placement(self, lo: int, hi: int, first: bool) -> tuple[int, tuple[tuple[int, int, int, tuple], ...]]:
        """Where a block's arrays lie in its message: (total bytes, ((index, offset, bytes, shape), ...))
        with the arrays by decreasing item size, worked out once per block row count and kind (a
        pipeline asks per message; balanced bounds have at most two row counts)."""
        key = (hi - lo, first)
        found = self._placements.get(key)
        if found is None:
            shapes = self._block_shapes(lo, hi, first)
            places, offset = [], 0
            for i in sorted(range(len(shapes)), key=lambda i: -self.dtypes[i].itemsize):
                if shapes[i] is not None:
                    size = math.prod(shapes[i]) * self.dtypes[i].itemsize
                    places.append((i, offset, size, shapes[i]))
                    offset += size
            if len(self._placements) >= _MAX_PLACEMENTS:
                self._placements.clear()
            found = self._placements[key] = (offset, tuple(places))
        return found

    def message_nbytes(self, lo: int, hi: int, first: bool) -> int:
        return self._placement(lo, hi, first)[0]

    def message_slots(self, bounds: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Where each block's message lies in one buffer holding all of them: (start, stop) bytes,
        block 0 first with the shared arrays, every start a multiple of the largest item size (so
        every view in it is aligned, the arrays lying by decreasing item size)."""
        slots, start = [], 0
        for k, (lo, hi) in enumerate(bounds):
            stop = start + self.message_nbytes(lo, hi, k == 0)
            slots.append((start, stop))
            start = self.aligned(stop)
        return slots

    def views(self, buffer: Any, lo: int, hi: int, first: bool) -> tuple:
        """Typed views of the arrays inside a block's message (None for those it omits)."""
        views: list = [None] * len(self.shapes)
        dtypes = self.dtypes
        for i, offset, size, shape in self._placement(lo, hi, first)[1]:
            views[i] = buffer[offset:offset + size].view(dtypes[i]).reshape(shape)
        return tuple(views)

    def block(self, parts: tuple, lo: int, hi: int, first: bool = True) -> tuple:
        """The rows lo:hi of every split array; shared arrays whole, or None unless ``first``."""
        return tuple(part[lo:hi] if split else (part if first else None)
                     for part, split in zip(parts, self.row_split))


@functools.lru_cache(maxsize=256)
def _layout(shapes: tuple, dtypes: tuple, rowwise: bool) -> ScanLayout:
    """:meth:`ScanLayout.of` for given shapes and dtypes, remembered: a call site scans the same
    state shape step after step, and working out the layout costs more than the scan of a small one."""
    if rowwise:
        try:
            full = np.broadcast_shapes(*shapes)
        except ValueError:
            raise TypeError(f"all_scan: a row-wise op needs arrays that broadcast together, got shapes "
                            f"{list(shapes)}") from None
    else:
        full = ()
    rows = full[0] if full else 1
    row_split = tuple(bool(full) and len(shape) == len(full) and shape[0] == rows for shape in shapes)
    return ScanLayout(shapes, tuple(np.dtype(dtype) for dtype in dtypes), rows, row_split)


def assign(targets: tuple, values: tuple) -> None:
    """Copy each value into its target (casting to the target's dtype), skipping None targets."""
    for target, value in zip(targets, values):
        if target is not None:
            target[...] = value


def complete(block: tuple, shared: tuple) -> tuple:
    """A block with its omitted (None) arrays taken from ``shared``, e.g. block 0's message."""
    return tuple(shared[i] if part is None else part for i, part in enumerate(block))
