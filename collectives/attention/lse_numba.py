"""The LSE merge as one fused numba loop over rows, for numpy arrays (imported on first use)."""

import numba
import numpy as np


@numba.njit(cache=True)
def merge_rows(o1, l1, o2, l2, o_out, l_out):
    """Rows of o: [rows, d_v], of l: [rows]; outputs may alias the inputs (each element is read
    before it is written)."""
    for row in range(l1.shape[0]):
        a, b = l1[row], l2[row]
        m = max(a, b)
        if m == -np.inf:
            o_out[row, :] = 0
            l_out[row] = m
            continue
        e1, e2 = np.exp(a - m), np.exp(b - m)
        s = e1 + e2
        w1, w2 = e1 / s, e2 / s
        for col in range(o1.shape[1]):
            o_out[row, col] = w1 * o1[row, col] + w2 * o2[row, col]
        l_out[row] = m + np.log(s)
