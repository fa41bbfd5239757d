"""Every LSE merge kernel (numpy expression, numba, the fake GPU's expression, CuPy's row kernel where
a GPU is visible) against the rule written here with numpy's logaddexp/exp and hand-computed edge rows;
the CUDA kernel's row indexing also on the CPU, compiled with g++ behind a CUDA stand-in."""

import ctypes
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest

from hpcrt import to_fake_gpu
from hpcrt.collectives import lse_merge
from hpcrt.collectives.attention import lse_cupy
from hpcrt.collectives.attention.lse_bench import COLUMNS
from hpcrt.collectives.bench import main as bench_main

from array_backends import BACKENDS, to_host
from conftest import require_tool

TOLERANCE = {np.float32: 2e-6, np.float64: 1e-14}
# Each kernel with the backend it runs on; CuPy's row kernel and its unfused expression where a GPU is visible.
KERNELS = [("numpy", "numpy"), ("numba", "numpy"), ("auto", "fakegpu")]
KERNELS += [("cupy", "cupy"), ("numpy", "cupy")] if "cupy" in BACKENDS else []
INF, NAN = np.inf, np.nan

# (l1, l2, o1, o2) -> (lse, out), worked out by hand (d_v = 3).
EDGE_ROWS = [
    ((0.0, 0.0, [1, 2, 3], [3, 2, 1]), (np.log(2), [2, 2, 2])),
    ((np.log(3), 0.0, [4, 0, 8], [0, 4, -8]), (np.log(4), [3, 1, 4])),
    ((1000.0, 1000.0, [1, 2, 3], [3, 2, 1]), (1000 + np.log(2), [2, 2, 2])),  # no overflow
    ((-1000.0, -1000.0, [1, 2, 3], [3, 2, 1]), (-1000 + np.log(2), [2, 2, 2])),  # no underflow
    ((-INF, 5.0, [1, 2, 3], [4, 5, 6]), (5.0, [4, 5, 6])),  # a masked partial weighs 0
    ((5.0, -INF, [4, 5, 6], [1, 2, 3]), (5.0, [4, 5, 6])),
    ((-INF, -INF, [NAN, INF, 1], [1, -INF, 3]), (-INF, [0, 0, 0])),  # fully masked: 0 whatever o holds
    ((-INF, 0.0, [NAN, 1, 1], [1, 2, 3]), (0.0, [NAN, 2, 3])),  # 0 · NaN is NaN
    ((INF, 0.0, [1, 2, 3], [1, 2, 3]), (INF, [NAN] * 3)),  # weight exp(inf − inf)
    ((INF, INF, [1, 2, 3], [1, 2, 3]), (INF, [NAN] * 3)),
    ((NAN, 0.0, [1, 2, 3], [1, 2, 3]), (NAN, [NAN] * 3)),
    ((0.0, NAN, [1, 2, 3], [1, 2, 3]), (NAN, [NAN] * 3)),
]


def partials(dtype, shape=(3, 17, 8), seed=0):
    """Two partial results (at least 13 rows) with fully masked rows (both lse −inf) and half-masked rows."""
    rng = np.random.default_rng(seed)
    o1, o2 = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    l1, l2 = (rng.standard_normal(shape[:-1]).astype(dtype) * 10 for _ in range(2))
    rows_l1, rows_l2 = l1.reshape(-1), l2.reshape(-1)
    rows_l1[:4] = rows_l2[:4] = -np.inf
    o1.reshape(rows_l1.size, shape[-1])[:4] = np.nan  # a fully masked block's o may be 0/0
    rows_l1[4:9] = -np.inf
    rows_l2[9:13] = -np.inf
    return o1, l1, o2, l2


def reference(o1, l1, o2, l2):
    """The rule in float64 numpy, written independently of the kernels: masked rows give 0."""
    o1, l1, o2, l2 = (np.asarray(a, np.float64) for a in (o1, l1, o2, l2))
    with np.errstate(invalid="ignore"):
        lse = np.logaddexp(l1, l2)
        masked = (l1 == -INF) & (l2 == -INF)
        w1 = np.exp(np.where(masked, -INF, l1 - lse))[..., None]
        w2 = np.exp(np.where(masked, -INF, l2 - lse))[..., None]
        out = np.where(masked[..., None], 0.0, w1 * o1 + w2 * o2)
    return out, lse


def edge_arrays(dtype):
    """The edge rows as (o1, l1, o2, l2) and the expected (out, lse)."""
    l1, l2, o1, o2 = (np.array(column, dtype) for column in zip(*(given for given, _ in EDGE_ROWS)))
    lse, out = (np.array(column, np.float64) for column in zip(*(want for _, want in EDGE_ROWS)))
    return (o1, l1, o2, l2), (out, lse)


def assert_merged(got, want, dtype, scale=1):
    """``got`` (out, lse) equals ``want`` to the dtype's rounding, NaN where ``want`` has NaN."""
    for array, expected in zip(got, want):
        assert array.dtype == dtype
        np.testing.assert_allclose(to_host(array), expected, rtol=scale * TOLERANCE[dtype],
                                   atol=scale * TOLERANCE[dtype], equal_nan=True)


def merge_on(backend, kernel, args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no invalid-value warnings from −inf − −inf, inf − inf, NaN
        return lse_merge(*(BACKENDS[backend](a) for a in args), kernel=kernel, **kwargs)


@pytest.mark.parametrize("kernel, backend", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edge_rows_give_the_hand_computed_values(dtype, kernel, backend):
    args, want = edge_arrays(dtype)
    assert_merged(merge_on(backend, kernel, args), want, dtype, scale=4)


@pytest.mark.parametrize("kernel, backend", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 17, 8), (3, 37, 1), (20, 131), (300, 7)])
def test_kernel_equals_the_reference(shape, dtype, kernel, backend):
    args = partials(dtype, shape, seed=len(shape))
    got = merge_on(backend, kernel, args)
    assert_merged(got, reference(*args), dtype, scale=10)
    assert not np.isnan(to_host(got[1])).any() and np.all(to_host(got[0]).reshape(-1, shape[-1])[:4] == 0)


@pytest.mark.parametrize("kernel, backend", [("auto", "numpy"), *KERNELS])
def test_merge_in_place_and_non_contiguous(kernel, backend):
    o1, l1, o2, l2 = partials(np.float64, seed=1)
    want = reference(o1, l1, o2, l2)
    xp_o1, xp_l1, xp_o2, xp_l2 = (BACKENDS[backend](a) for a in (o1, l1, o2, l2))
    acc_o, acc_l = xp_o1.copy(), xp_l1.copy()
    got = lse_merge(acc_o, acc_l, xp_o2, xp_l2, out=(acc_o, acc_l), kernel=kernel)
    assert got[0] is acc_o and got[1] is acc_l
    assert_merged((acc_o, acc_l), want, np.float64, scale=10)
    fortran_o1, strided_o2 = xp_o1.T.copy().T, xp_o2.repeat(2, axis=-1)[..., ::2]
    strided = lse_merge(fortran_o1, xp_l1, strided_o2, xp_l2, kernel=kernel)
    assert_merged(strided, want, np.float64, scale=10)


@pytest.mark.skipif("cupy" not in BACKENDS, reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1, 3, 4, 5, 127, 128, 131])
@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 1, 1), (1, 0, 2)])
def test_cupy_rows_at_any_width_and_alignment(width, shift, dtype):
    """Views shifted by whole elements: the same shift takes the vector path after a scalar head,
    different shifts the scalar path."""
    import cupy
    args = partials(dtype, (600, width), seed=width)
    views = [cupy.asarray(np.concatenate([np.zeros(s, dtype), a.ravel()]))[s:].reshape(a.shape)
             for s, a in zip((shift[0], 0, shift[1], 0), args)]
    out_buffer = cupy.zeros(args[0].size + shift[2], dtype)
    out = (out_buffer[shift[2]:].reshape(args[0].shape), cupy.empty(args[1].shape, dtype))
    lse_merge(*views, out=out, kernel="cupy")
    assert_merged(out, reference(*args), dtype, scale=10)
    assert np.all(to_host(out_buffer[:shift[2]]) == 0)


def test_fake_gpu_takes_the_expression_path():
    args = partials(np.float64, seed=2)
    got = lse_merge(*(to_fake_gpu(a) for a in args))
    want = lse_merge(*args, kernel="numpy")
    assert type(got[0]).__name__ == "FakeGpuArray"
    np.testing.assert_array_equal(got[0].get(), want[0])
    np.testing.assert_array_equal(got[1].get(), want[1])
    with pytest.raises(ValueError, match="does not run on fakegpu"):
        lse_merge(*(to_fake_gpu(a) for a in args), kernel="numba")


def test_bad_arguments():
    o1, l1, o2, l2 = partials(np.float64)
    with pytest.raises(ValueError, match="unknown lse_merge kernel"):
        lse_merge(o1, l1, o2, l2, kernel="triton")
    with pytest.raises(ValueError, match="shapes do not fit"):
        lse_merge(o1, l1[:, :3], o2, l2)
    with pytest.raises(ValueError, match=re.escape("out[0] must be C-contiguous")):
        lse_merge(o1, l1, o2, l2, out=(np.empty(o1.shape, order="F"), np.empty(l1.shape)), kernel="numba")


ALL_KERNELS = [("auto", "numpy"), ("numpy", "numpy"), ("auto", "fakegpu")]
ALL_KERNELS += [("cupy", "cupy")] if "cupy" in BACKENDS else []


@pytest.mark.parametrize("kernel, backend", ALL_KERNELS)
def test_out_is_checked_before_any_kernel_runs(kernel, backend):
    convert = BACKENDS[backend]
    args = tuple(convert(a) for a in partials(np.float64))
    o_shape, l_shape = args[0].shape, args[1].shape
    # one-row outputs inside a buffer that holds a full result: an unchecked kernel writes into it
    memory = convert(np.full(2 * args[0].size, -7.0))
    one_row = (memory[:o_shape[-1]].reshape(1, o_shape[-1]), memory[args[0].size:args[0].size + 1])
    with pytest.raises(ValueError, match=re.escape(f"out[0] must have the result's shape {o_shape}, got (1, 8)")):
        lse_merge(*args, out=one_row, kernel=kernel)
    assert np.all(to_host(memory) == -7.0)
    right_o, right_l = convert(np.zeros(o_shape)), convert(np.zeros(l_shape))
    with pytest.raises(ValueError, match=re.escape(f"out[1] must have the result's shape {l_shape}, got (3,)")):
        lse_merge(*args, out=(right_o, convert(np.zeros(3))), kernel=kernel)
    with pytest.raises(TypeError, match=re.escape("out[1] must have the result's dtype float64, got float32")):
        lse_merge(*args, out=(right_o, convert(np.zeros(l_shape, np.float32))), kernel=kernel)
    with pytest.raises(TypeError, match=re.escape(f"out[0] must be a {backend} array like the inputs, got list")):
        lse_merge(*args, out=([0.0], right_l), kernel=kernel)
    if backend != "cupy":  # CuPy arrays are always writable
        read_only = convert(np.zeros(o_shape))
        read_only.flags.writeable = False
        with pytest.raises(ValueError, match=re.escape("out[0] is read-only")):
            lse_merge(*args, out=(read_only, right_l), kernel=kernel)
    with pytest.raises(TypeError, match="out must be a pair"):
        lse_merge(*args, out=right_o, kernel=kernel)
    assert np.all(to_host(right_o) == 0) and np.all(to_host(right_l) == 0)


@pytest.mark.parametrize("kernel, backend", ALL_KERNELS)
@pytest.mark.parametrize("dtypes", [(np.float16,) * 4, (np.complex128,) * 4,
                                    (np.float64, np.float32, np.float64, np.float64)])
def test_dtypes_no_kernel_takes_are_a_type_error(dtypes, kernel, backend):
    args = tuple(BACKENDS[backend](a.astype(dtype)) for a, dtype in zip(partials(np.float64), dtypes))
    with pytest.raises(TypeError, match="need one dtype of float32, float64"):
        lse_merge(*args, kernel=kernel)


@pytest.mark.parametrize("kernel, backend", ALL_KERNELS)
def test_empty_value_dim_still_merges_the_lse(kernel, backend):
    o1, l1, o2, l2 = partials(np.float64, shape=(3, 17, 0))
    got_o, got_l = lse_merge(*(BACKENDS[backend](a) for a in (o1, l1, o2, l2)), kernel=kernel)
    assert got_o.shape == (3, 17, 0)
    np.testing.assert_allclose(to_host(got_l), reference(o1, l1, o2, l2)[1], rtol=1e-14)


def test_bench_prints_each_kernel_beside_a_copy(capsys):
    """A tiny host run: one row per size, dtype and kernel with a ratio to the copy, no wrong values."""
    assert bench_main(["lse", "--buffers", "numpy", "--rows", "40", "300", "--width", "5", "--repeats", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [line.split() for line in lines if not line.startswith("#")]
    assert table[0] == list(COLUMNS)
    cases = [(rows, dtype, kernel) for rows in ("40", "300") for dtype in ("float32", "float64")
             for kernel in ("numba", "numpy")]
    assert [(row[0], row[2], row[3]) for row in table[1:]] == cases
    assert all(float(row[7]) > 0 and row[8] == "0" for row in table[1:])
    assert lines[-3].startswith("# lse_merge numba float64: ")
    assert lines[-3].endswith("x the copy's bandwidth at 40-300 rows x 5")


# --- the CUDA kernel's source on the CPU ---------------------------------------------------------

CUDA_STAND_IN = r"""
#include <cmath>
using std::isinf;
struct Index { unsigned x; };
static Index threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __syncwarp()
struct alignas(16) float4 { float x, y, z, w; };  // a misaligned vector load: the sanitizer reports it
struct alignas(16) double2 { double x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline double2 make_double2(double a, double b) { return {a, b}; }
"""
LAUNCH = r"""
template <typename T, typename V>
static void launch(const T* o1, const T* l1, const T* o2, const T* l2, T* o, T* l, long long rows, long long d,
                   unsigned blocks, unsigned threads) {
    gridDim.x = blocks; blockDim.x = threads;
    for (unsigned b = 0; b < blocks; ++b)
        for (unsigned t = 0; t < threads; ++t) {
            blockIdx.x = b; threadIdx.x = t;
            hpcrt_lse_merge_rows<T, V>(o1, l1, o2, l2, o, l, rows, d);
        }
}
#define ENTRY(name, T, V) extern "C" void name(const T* o1, const T* l1, const T* o2, const T* l2, T* o, T* l, \
    long long rows, long long d, unsigned blocks, unsigned threads) { launch<T, V>(o1, l1, o2, l2, o, l, rows, d, \
    blocks, threads); }
ENTRY(merge_float32, float, float4)
ENTRY(merge_float64, double, double2)
"""


@pytest.fixture(scope="module")
def emulated_kernel(tmp_path_factory):
    """The kernel source compiled for the CPU, each thread of each block run in turn (lanes one after another,
    so an ``l`` aliasing ``l1`` is not tested here; the CuPy tests cover it)."""
    require_tool("g++", "apt-get install g++")
    folder = tmp_path_factory.mktemp("lse_kernel")
    (folder / "kernel.cpp").write_text(CUDA_STAND_IN + lse_cupy.KERNEL_SOURCE + LAUNCH)
    subprocess.run(["g++", "-O1", "-std=c++14", "-shared", "-fPIC", "-fsanitize=alignment",  # reports misaligned loads
                    "-o", str(folder / "kernel.so"), str(folder / "kernel.cpp")], check=True, capture_output=True,
                   timeout=120)
    return ctypes.CDLL(str(folder / "kernel.so"))


def run_emulated(library, args, out, multiprocessors=1):
    rows, width = args[1].size, args[0].shape[-1]
    pointers = [ctypes.c_void_p(a.ctypes.data) for a in (*args, *out)]
    getattr(library, f"merge_{out[0].dtype}")(
        *pointers, ctypes.c_longlong(rows), ctypes.c_longlong(width),
        ctypes.c_uint(lse_cupy.grid_blocks(rows, multiprocessors)), ctypes.c_uint(lse_cupy.WARPS_PER_BLOCK * 32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [0, 1, 3, 4, 5, 8, 127, 128, 131])
@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 1, 1), (3, 3, 3), (1, 0, 2)])
def test_cuda_kernel_source_on_the_cpu(emulated_kernel, width, shift, dtype, capfd):
    """More rows than the grid's warps (the grid-stride loop), views shifted by whole elements (a scalar head,
    then vectors, when all three share the shift; scalar loads otherwise), o written in place."""
    args = partials(dtype, (300, width), seed=width)
    buffers = [np.zeros(a.size + s, dtype) for s, a in zip(shift, (args[0], args[2], args[0]))]
    o1, o2, out_o = (b[s:].reshape(args[0].shape) for b, s in zip(buffers, shift))
    o1[...], o2[...] = args[0], args[2]
    out_l = np.empty_like(args[1])
    run_emulated(emulated_kernel, (o1, args[1], o2, args[3]), (out_o, out_l))
    assert_merged((out_o, out_l), reference(*args), dtype, scale=10)
    assert np.all(buffers[2][:shift[2]] == 0)
    in_place = o1.copy()
    run_emulated(emulated_kernel, (in_place, args[1], o2, args[3]), (in_place, out_l), multiprocessors=4)
    assert_merged((in_place, out_l), reference(*args), dtype, scale=10)
    assert "misaligned" not in capfd.readouterr().err  # the sanitizer's report of a vector load the GPU refuses


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_kernel_source_edge_rows(emulated_kernel, dtype):
    args, want = edge_arrays(dtype)
    out = (np.empty_like(args[0]), np.empty_like(args[1]))
    run_emulated(emulated_kernel, args, out)
    assert_merged(out, want, dtype, scale=4)


def test_cuda_kernel_source_compiles_for_the_gpu(tmp_path):
    """nvcc compiles both instantiations for sm_90, with 16-byte vector loads (CuPy compiles it with NVRTC)."""
    if shutil.which("nvcc") is None:
        pytest.skip("needs nvcc (the CUDA toolkit: apt-get install nvidia-cuda-toolkit)")
    source = lse_cupy.KERNEL_SOURCE + "".join(
        f"template __global__ void {name}(const {t}*, const {t}*, const {t}*, const {t}*, {t}*, {t}*, "
        "long long, long long);\n" for name, t in zip(lse_cupy.KERNEL_NAMES.values(), ("float", "double")))
    (tmp_path / "kernel.cu").write_text(source)
    subprocess.run(["nvcc", "-arch=sm_90", "-std=c++14", "-ptx", "-o", str(tmp_path / "kernel.ptx"),
                    str(tmp_path / "kernel.cu")], check=True, capture_output=True, timeout=300)
    ptx = (tmp_path / "kernel.ptx").read_text()
    assert "ld.global.v4.f32" in ptx and "ld.global.v2.f64" in ptx
