"""The LSE merge as one row-wise CUDA kernel, for CuPy arrays (imported on first use).

One warp per row: the lse and both weights are computed once per row, then the row streams
through 16-byte vector loads (float4, double2) with scalar loads for an unaligned head and tail.
Outputs may alias the inputs: each element is read before the same thread writes it, and the row's
lse is written only after every lane of the warp has read both input lse.
"""

from __future__ import annotations

import functools
from typing import Any

WARPS_PER_BLOCK = 8
WARP = 32

KERNEL_SOURCE = r"""
__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log1p_(float x) { return log1pf(x); }
__device__ __forceinline__ double log1p_(double x) { return log1p(x); }
__device__ __forceinline__ float4 merge_(float4 p, float4 q, float w1, float w2) {
    return make_float4(w1 * p.x + w2 * q.x, w1 * p.y + w2 * q.y, w1 * p.z + w2 * q.z, w1 * p.w + w2 * q.w);
}
__device__ __forceinline__ double2 merge_(double2 p, double2 q, double w1, double w2) {
    return make_double2(w1 * p.x + w2 * q.x, w1 * p.y + w2 * q.y);
}

// numpy's logaddexp: equal arguments (both infinities included) give x + log 2, NaN stays NaN.
template <typename T>
__device__ __forceinline__ T logaddexp_(T x, T y) {
    if (x == y) return x + T(0.693147180559945309417232121458);
    T d = x - y;
    if (d > 0) return x + log1p_(exp_(-d));
    if (d <= 0) return y + log1p_(exp_(d));
    return d;
}

template <typename T, typename V>
__global__ void hpcrt_lse_merge_rows(const T* o1, const T* l1, const T* o2, const T* l2, T* o, T* l,
                                     long long rows, long long d) {
    const int lane = threadIdx.x % 32;
    const long long first = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const long long step = ((long long)gridDim.x * blockDim.x) / 32;
    const long long width = sizeof(V) / sizeof(T);
    for (long long row = first; row < rows; row += step) {
        const T a = l1[row], b = l2[row];
        __syncwarp();  // every lane has read l1, l2 before lane 0 may overwrite them (l aliasing l1)
        const bool masked = isinf(a) && a < 0 && isinf(b) && b < 0;
        const T lse = masked ? a : logaddexp_(a, b);
        const T top = masked ? T(0) : (a > b ? a : b);  // NaN anywhere makes e1 + e2 NaN
        const T e1 = exp_(a - top), e2 = exp_(b - top);
        const T w1 = e1 / (e1 + e2), w2 = e2 / (e1 + e2);
        const T* x = o1 + row * d;
        const T* y = o2 + row * d;
        T* z = o + row * d;
        if (masked) {  // a fully masked row merges to 0 whatever its o holds
            for (long long i = lane; i < d; i += 32) z[i] = T(0);
        } else {
            const unsigned long long offset = (unsigned long long)x % sizeof(V);
            const bool vectors = (unsigned long long)y % sizeof(V) == offset
                                 && (unsigned long long)z % sizeof(V) == offset;
            long long head = vectors ? ((sizeof(V) - offset) % sizeof(V)) / sizeof(T) : d;
            head = head < d ? head : d;
            const long long count = (d - head) / width;
            for (long long i = lane; i < head; i += 32) z[i] = w1 * x[i] + w2 * y[i];
            const V* xv = (const V*)(x + head);
            const V* yv = (const V*)(y + head);
            V* zv = (V*)(z + head);
            for (long long i = lane; i < count; i += 32) zv[i] = merge_(xv[i], yv[i], w1, w2);
            for (long long i = head + count * width + lane; i < d; i += 32) z[i] = w1 * x[i] + w2 * y[i];
        }
        __syncwarp();
        if (lane == 0) l[row] = lse;
    }
}
"""
KERNEL_NAMES = {"float32": "hpcrt_lse_merge_rows<float, float4>", "float64": "hpcrt_lse_merge_rows<double, double2>"}


@functools.lru_cache(maxsize=None)
def _kernel(dtype: str, device: int) -> Any:
    """The compiled kernel for ``dtype`` on ``device`` (compiled once per process and device)."""
    import cupy

    with cupy.cuda.Device(device):
        module = cupy.RawModule(code=KERNEL_SOURCE, options=("--std=c++14",),
                                name_expressions=tuple(KERNEL_NAMES.values()))
        return module.get_function(KERNEL_NAMES[dtype])


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: int) -> int:
    import cupy

    return cupy.cuda.Device(device).attributes["MultiProcessorCount"]


def grid_blocks(rows: int, multiprocessors: int) -> int:
    """Blocks for ``rows`` rows: one warp per row, capped at 32 blocks per multiprocessor (the rest loop)."""
    return max(1, min(-(-rows // WARPS_PER_BLOCK), 32 * multiprocessors))


def cupy_merge(o1: Any, l1: Any, o2: Any, l2: Any, o_out: Any, l_out: Any) -> None:
    """Merge into the C-contiguous ``o_out``, ``l_out``; strided inputs are made contiguous first."""
    import cupy

    rows, width = l1.size, o1.shape[-1]
    if rows == 0:
        return
    device = o_out.device.id
    with cupy.cuda.Device(device):  # the arrays' device, whichever is current
        inputs = [cupy.ascontiguousarray(a) for a in (o1, l1, o2, l2)]
        _kernel(str(o_out.dtype), device)((grid_blocks(rows, _multiprocessors(device)),), (WARPS_PER_BLOCK * WARP,),
                                          (*inputs, o_out, l_out, cupy.int64(rows), cupy.int64(width)))
