"""The LSE merge as one fused numba loop over rows, for numpy arrays (imported on first use)."""

import numba
import numpy as np


@numba.njit(cache=True)
def merge_rows(o1, l1, o2, l2, o_out, l_out):
    """Rows of o: [rows, d_v], of l: [rows]; the weights once per row, the rule of ``lse_merge``.

    Outputs may alias the inputs (each element is read before it is written)."""
    for row in range(l1.shape[0]):
        a, b = l1[row], l2[row]
        if a == -np.inf and b == -np.inf:
            o_out[row, :] = 0
            l_out[row] = a
            continue
        top = max(a, b)
        e1, e2 = np.exp(a - top), np.exp(b - top)
        w1, w2 = e1 / (e1 + e2), e2 / (e1 + e2)
        for col in range(o1.shape[1]):
            o_out[row, col] = w1 * o1[row, col] + w2 * o2[row, col]
        l_out[row] = np.logaddexp(a, b)
