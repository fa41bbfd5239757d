"""How a flat buffer is cut into per-rank blocks when the size does not divide evenly."""

from __future__ import annotations


def block_bounds(n: int, p: int) -> list[tuple[int, int]]:
    """The ``p`` contiguous blocks ``[start, stop)`` of ``n`` elements, numpy.array_split's rule.

    The first ``n % p`` blocks get one element more than the rest; blocks may be empty.
    """
    if p < 1:
        raise ValueError(f"need at least one block, got p={p}")
    base, extra = divmod(int(n), p)
    bounds, start = [], 0
    for i in range(p):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds
