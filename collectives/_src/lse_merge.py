"""Merging two partial attention results by the log-sum-exp rule:
lse = logaddexp(l1, l2), out = exp(l1 − lse)·o1 + exp(l2 − lse)·o2.

``o`` has shape [..., T, d_v] and ``l`` [..., T]. Rows whose both lse are −inf (fully masked in
causal attention) merge to out 0 and lse −inf, never NaN. One fused pass per backend: numba on
numpy arrays, CuPy kernels on CUDA arrays, the numpy expression (through ``xp``) as reference
and for the fake GPU.
"""

from __future__ import annotations

from typing import Any, Optional

import numba
import numpy as np

from hpcrt._src.backends import backend_of

LSE_KERNELS = ("auto", "numba", "cupy", "numpy")


def lse_merge(o1: Any, l1: Any, o2: Any, l2: Any, out: Optional[tuple] = None, *,
              kernel: str = "auto") -> tuple[Any, Any]:
    """Merge (o1, l1) and (o2, l2) into (out, lse); ``out=(o, l)`` may alias the inputs.

    ``kernel="auto"`` picks numba for numpy arrays, cupy for CuPy arrays, numpy otherwise.
    """
    if kernel not in LSE_KERNELS:
        raise ValueError(f"unknown lse_merge kernel {kernel!r}; expected one of {LSE_KERNELS}")
    if o1.shape != o2.shape or l1.shape != l2.shape or o1.shape[:-1] != l1.shape:
        raise ValueError(f"lse_merge: shapes do not fit: o {o1.shape}/{o2.shape}, lse {l1.shape}/{l2.shape}")
    backend = backend_of(o1)
    if kernel == "auto":
        kernel = {"numpy": "numba", "cupy": "cupy"}.get(backend.name, "numpy")
    xp = backend.xp
    o_out, l_out = out if out is not None else (xp.empty(o1.shape, o1.dtype), xp.empty(l1.shape, l1.dtype))
    if kernel != "numpy" and not (o_out.flags.c_contiguous and l_out.flags.c_contiguous):
        raise ValueError("lse_merge: out arrays must be C-contiguous")
    if kernel == "numba":
        rows = (-1, o1.shape[-1])
        _merge_rows(xp.ascontiguousarray(o1).reshape(rows), xp.ascontiguousarray(l1).reshape(-1),
                    xp.ascontiguousarray(o2).reshape(rows), xp.ascontiguousarray(l2).reshape(-1),
                    o_out.reshape(rows), l_out.reshape(-1))
    elif kernel == "cupy":
        _cupy_merge(o1, l1, o2, l2, o_out, l_out)
    else:
        o_out[...], l_out[...] = lse_merge_expression(xp, o1, l1, o2, l2)
    return o_out, l_out


def lse_merge_expression(xp: Any, o1: Any, l1: Any, o2: Any, l2: Any) -> tuple[Any, Any]:
    """The reference: the merge rule written in array operations of ``xp``."""
    lse = xp.logaddexp(l1, l2)
    finite = xp.where(lse == -np.inf, 0, lse)
    w1, w2 = xp.exp(l1 - finite)[..., None], xp.exp(l2 - finite)[..., None]
    return (w1 * o1 + w2 * o2).astype(o1.dtype), lse


@numba.njit(parallel=True, cache=True)
def _merge_rows(o1, l1, o2, l2, o_out, l_out):
    for row in numba.prange(l1.shape[0]):
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


_CUPY_KERNELS: list = []


def _cupy_merge(o1: Any, l1: Any, o2: Any, l2: Any, o_out: Any, l_out: Any) -> None:
    """Two fused elementwise kernels: the outputs first (reading l1, l2), then the lse, so
    ``out`` may alias the inputs."""
    if not _CUPY_KERNELS:
        import cupy

        prologue = "T m = max(a, b); bool masked = isinf(m) && m < 0; T e1 = masked ? T(0) : exp(a - m); " \
                   "T e2 = masked ? T(0) : exp(b - m); T s = masked ? T(1) : e1 + e2;"
        _CUPY_KERNELS.append(cupy.ElementwiseKernel(
            "T x, T a, T y, T b", "T o", prologue + " o = (e1 * x + e2 * y) / s;", "hpcrt_lse_merge_out"))
        _CUPY_KERNELS.append(cupy.ElementwiseKernel(
            "T a, T b", "T l", prologue + " l = masked ? m : m + log(s);", "hpcrt_lse_merge_lse"))
    merge_out, merge_lse = _CUPY_KERNELS
    merge_out(o1, l1[..., None], o2, l2[..., None], o_out)
    merge_lse(l1, l2, l_out)
