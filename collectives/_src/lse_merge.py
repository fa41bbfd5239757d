"""Merging two partial attention results by the log-sum-exp rule:
lse = logaddexp(l1, l2), out = exp(l1 − lse)·o1 + exp(l2 − lse)·o2.

``o`` has shape [..., T, d_v] and ``l`` [..., T]. Rows whose both lse are −inf (fully masked in
causal attention) merge to out 0 and lse −inf, never NaN. One fused pass per backend: numba on
numpy arrays (serial: ranks already share the cores, threads per rank would oversubscribe
them), CuPy kernels on CUDA arrays, and the numpy expression (through ``xp``) as the reference
and for the fake GPU.
"""

from __future__ import annotations

from typing import Any, Optional

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
    native = {"numpy": "numba", "cupy": "cupy"}.get(backend.name, "numpy")
    if kernel == "auto":
        kernel = native
    elif kernel not in ("numpy", native):
        raise ValueError(f"lse_merge: the {kernel} kernel does not run on {backend.name} arrays")
    xp = backend.xp
    o_out, l_out = out if out is not None else (xp.empty(o1.shape, o1.dtype), xp.empty(l1.shape, l1.dtype))
    if kernel != "numpy" and not (o_out.flags.c_contiguous and l_out.flags.c_contiguous):
        raise ValueError("lse_merge: out arrays must be C-contiguous")
    if kernel == "numba":
        from .lse_numba import merge_rows  # numba loads only when used

        rows = (-1, o1.shape[-1])
        merge_rows(xp.ascontiguousarray(o1).reshape(rows), xp.ascontiguousarray(l1).reshape(-1),
                   xp.ascontiguousarray(o2).reshape(rows), xp.ascontiguousarray(l2).reshape(-1),
                   o_out.reshape(rows), l_out.reshape(-1))
    elif kernel == "cupy":
        from .lse_cupy import cupy_merge

        cupy_merge(o1, l1, o2, l2, o_out, l_out)
    else:
        o_out[...], l_out[...] = lse_merge_expression(xp, o1, l1, o2, l2)
    return o_out, l_out


def lse_merge_expression(xp: Any, o1: Any, l1: Any, o2: Any, l2: Any) -> tuple[Any, Any]:
    """The reference: the merge rule written in array operations of ``xp``."""
    lse = xp.logaddexp(l1, l2)
    finite = xp.where(lse == -np.inf, 0, lse)
    w1, w2 = xp.exp(l1 - finite)[..., None], xp.exp(l2 - finite)[..., None]
    return (w1 * o1 + w2 * o2).astype(o1.dtype), lse
