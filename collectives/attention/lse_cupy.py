"""The LSE merge as two fused CuPy elementwise kernels, for CUDA arrays (imported on first use).

The outputs come first (reading l1, l2), then the lse, so the outputs may alias the inputs.
"""

from typing import Any

import cupy

_PROLOGUE = ("T m = max(a, b); bool masked = isinf(m) && m < 0;"
             " T e1 = masked ? T(0) : exp(a - m); T e2 = masked ? T(0) : exp(b - m);"
             " T s = masked ? T(1) : e1 + e2;")
_MERGE_OUT = cupy.ElementwiseKernel("T x, T a, T y, T b", "T o", _PROLOGUE + " o = (e1 * x + e2 * y) / s;",
                                    "hpcrt_lse_merge_out")
_MERGE_LSE = cupy.ElementwiseKernel("T a, T b", "T l", _PROLOGUE + " l = masked ? m : m + log(s);",
                                    "hpcrt_lse_merge_lse")


def cupy_merge(o1: Any, l1: Any, o2: Any, l2: Any, o_out: Any, l_out: Any) -> None:
    _MERGE_OUT(o1, l1[..., None], o2, l2[..., None], o_out)
    _MERGE_LSE(l1, l2, l_out)
