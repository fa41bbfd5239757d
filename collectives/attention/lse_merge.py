"""Merging two partial attention results by the log-sum-exp rule:
lse = logaddexp(l1, l2), out = w1·o1 + w2·o2 with w_i = exp(l_i − lse), computed as
w_i = e_i / (e1 + e2), e_i = exp(l_i − max(l1, l2)): exact weights of ½ at any equal lse.

``o`` has shape [..., T, d_v] and ``l`` [..., T]. Every kernel follows IEEE arithmetic of that
formula, with numpy's ``logaddexp``, and one exception: a row whose both lse are −inf (fully
masked in causal attention) merges to out 0 and lse −inf, never NaN, whatever its o holds.
So a NaN lse gives NaN everywhere in the row; a +inf lse gives lse +inf and out NaN (inf − inf);
a −inf lse beside a finite one weighs its o by 0 (NaN or inf there still gives NaN).
One fused pass per backend: numba on numpy arrays (serial: ranks already share the cores,
threads per rank would oversubscribe them), a row-wise CUDA kernel on CuPy arrays, and the numpy
expression (through ``xp``) for the fake GPU and as the unfused baseline.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from hpcrt.backends.arrays import ArrayBackend, backend_of

from hpcrt.collectives.comm.entry import checked_out

LSE_KERNELS = ("auto", "numba", "cupy", "numpy")
LSE_DTYPES = ("float32", "float64")
"""The dtypes every kernel takes (numba has no float16 arithmetic)."""


def lse_merge(o1: Any, l1: Any, o2: Any, l2: Any, out: Optional[tuple] = None, *,
              kernel: str = "auto") -> tuple[Any, Any]:
    """Merge (o1, l1) and (o2, l2) into (out, lse); ``out=(o, l)`` may alias the inputs.

    ``kernel="auto"`` picks numba for numpy arrays, cupy for CuPy arrays, numpy otherwise.
    """
    if kernel not in LSE_KERNELS:
        raise ValueError(f"unknown lse_merge kernel {kernel!r}; expected one of {LSE_KERNELS}")
    backend = _checked_inputs(o1, l1, o2, l2)
    native = {"numpy": "numba", "cupy": "cupy"}.get(backend.name, "numpy")
    if kernel == "auto":
        kernel = native
    elif kernel not in ("numpy", native):
        raise ValueError(f"lse_merge: the {kernel} kernel does not run on {backend.name} arrays")
    xp = backend.xp
    if out is None:
        o_out, l_out = xp.empty(o1.shape, o1.dtype), xp.empty(l1.shape, l1.dtype)
    else:
        o_out, l_out = _checked_out(out, o1, l1, backend, kernel)
    if kernel == "numba":
        from hpcrt.collectives.attention.lse_numba import merge_rows  # numba loads only when used

        rows = (l1.size, o1.shape[-1])  # not -1: a row count cannot be inferred when d_v is 0
        merge_rows(xp.ascontiguousarray(o1).reshape(rows), xp.ascontiguousarray(l1).reshape(-1),
                   xp.ascontiguousarray(o2).reshape(rows), xp.ascontiguousarray(l2).reshape(-1),
                   o_out.reshape(rows), l_out.reshape(-1))
    elif kernel == "cupy":
        from hpcrt.collectives.attention.lse_cupy import cupy_merge

        cupy_merge(o1, l1, o2, l2, o_out, l_out)
    else:
        o_out[...], l_out[...] = lse_merge_expression(xp, o1, l1, o2, l2)
    return o_out, l_out


def _backend_name(array: Any) -> str:
    """The backend of ``array``, or its type name where it is no array at all."""
    try:
        return backend_of(array).name
    except TypeError:
        return type(array).__name__


def _checked_inputs(o1: Any, l1: Any, o2: Any, l2: Any) -> ArrayBackend:
    """The inputs' one backend, after checking they fit together and that the kernels take their dtype."""
    if o1.shape != o2.shape or l1.shape != l2.shape or o1.ndim == 0 or o1.shape[:-1] != l1.shape:
        raise ValueError(f"lse_merge: shapes do not fit: o {o1.shape}/{o2.shape}, lse {l1.shape}/{l2.shape}")
    dtypes = [str(a.dtype) for a in (o1, l1, o2, l2)]
    if len(set(dtypes)) != 1 or dtypes[0] not in LSE_DTYPES:
        raise TypeError(f"lse_merge: o1, l1, o2, l2 need one dtype of {', '.join(LSE_DTYPES)} "
                        f"(the kernels' dtypes), got {', '.join(dtypes)}")
    backends = [_backend_name(a) for a in (o1, l1, o2, l2)]
    if len(set(backends)) != 1:
        raise TypeError(f"lse_merge: o1, l1, o2, l2 must live on one backend, got {', '.join(backends)}")
    return backend_of(o1)


def _checked_out(out: Any, o1: Any, l1: Any, backend: ArrayBackend, kernel: str) -> tuple[Any, Any]:
    """``out`` once both arrays can take the result: the fused kernels write by flat row index, so
    a smaller or strided array would be written past its end."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"lse_merge: out must be a pair (o, l), got {type(out).__name__}")
    contiguous_for = None if kernel == "numpy" else f" for the {kernel} kernel"
    for name, array, like in (("out[0]", out[0], o1), ("out[1]", out[1], l1)):
        problem = checked_out("lse_merge", array, like.shape, like.dtype, backend, name=name, like="the inputs",
                              contiguous_for=contiguous_for)
        if problem is not None:
            raise problem
    return out[0], out[1]


def lse_merge_expression(xp: Any, o1: Any, l1: Any, o2: Any, l2: Any) -> tuple[Any, Any]:
    """The merge rule written in array operations of ``xp`` (no warnings for −inf, +inf or NaN lse)."""
    with np.errstate(invalid="ignore"):
        lse = xp.logaddexp(l1, l2)
        masked = lse == -np.inf
        top = xp.where(masked, 0, xp.maximum(l1, l2))
        e1, e2 = xp.exp(l1 - top), xp.exp(l2 - top)
        total = xp.where(masked, 1, e1 + e2)
        w1, w2 = (e1 / total)[..., None], (e2 / total)[..., None]
        return xp.where(masked[..., None], 0, w1 * o1 + w2 * o2).astype(o1.dtype), lse
