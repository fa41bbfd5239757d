"""Softmax attention of one block of queries against one block of keys, returned as a partial
result (normalized output and log-sum-exp per query) that the LSE rule merges with others."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcrt.backends.arrays import get_xp


def block_attention(q: Any, k: Any, v: Any, *, q_start: int, k_start: int, causal: bool,
                    scale: float) -> tuple[Any, Any]:
    """(out [..., Tq, d_v], lse [..., Tq]) of ``q`` against ``k``/``v``; the starts are global
    token positions, used by the causal mask (key position ≤ query position).

    Queries that see no key get out 0 and lse −inf.
    """
    xp = get_xp(q)
    scores = xp.matmul(q, xp.swapaxes(k, -1, -2)) * scale
    tq, tk = q.shape[-2], k.shape[-2]
    if causal and k_start + tk - 1 > q_start:
        future = xp.arange(k_start, k_start + tk)[None, :] > xp.arange(q_start, q_start + tq)[:, None]
        scores = xp.where(future, -np.inf, scores)
    top = scores.max(axis=-1, keepdims=True)
    top = xp.where(top == -np.inf, 0, top)
    weights = xp.exp(scores - top)
    total = weights.sum(axis=-1)
    seen = total > 0
    total = xp.where(seen, total, 1)
    out = (xp.matmul(weights, v) / total[..., None]).astype(q.dtype)
    lse = xp.where(seen, top[..., 0] + xp.log(total), -np.inf).astype(q.dtype)
    return out, lse
