"""The fused log-sum-exp merge equals the numpy expression, masked rows included, on every backend."""

import re
import warnings

import numpy as np
import pytest

from hpcrt import to_fake_gpu
from hpcrt.collectives import lse_merge

from array_backends import BACKENDS, to_host

TOLERANCE = {np.float32: 1e-6, np.float64: 1e-14}
# Each fused kernel with the backend it runs on: numba on numpy, CuPy's on CUDA arrays where present.
FUSED = [("numba", "numpy")] + ([("cupy", "cupy")] if "cupy" in BACKENDS else [])


def partials(dtype, shape=(3, 17, 8), seed=0):
    """Two partial results with fully masked rows (both lse −inf) and half-masked rows."""
    rng = np.random.default_rng(seed)
    o1, o2 = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    l1, l2 = (rng.standard_normal(shape[:-1]).astype(dtype) * 10 for _ in range(2))
    l1[0, :4] = l2[0, :4] = -np.inf
    o1[0, :4] = o2[0, :4] = 0
    l1[1, :5] = -np.inf
    l2[2, 5:9] = -np.inf
    return o1, l1, o2, l2


def by_hand(o1, l1, o2, l2):
    """The rule written out row by row in float64."""
    out, lse = np.zeros(o1.shape), np.full(l1.shape, -np.inf)
    for index in np.ndindex(l1.shape):
        a, b = float(l1[index]), float(l2[index])
        if max(a, b) == -np.inf:
            continue
        lse[index] = np.logaddexp(a, b)
        out[index] = np.exp(a - lse[index]) * o1[index] + np.exp(b - lse[index]) * o2[index]
    return out, lse


@pytest.mark.parametrize("kernel, backend", FUSED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_kernel_equals_the_numpy_expression(dtype, kernel, backend):
    args = partials(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no invalid-value warnings from −inf − −inf
        fused = tuple(to_host(a) for a in lse_merge(*(BACKENDS[backend](a) for a in args), kernel=kernel))
        reference = lse_merge(*args, kernel="numpy")
    for got, want in zip(fused, reference):
        assert got.dtype == dtype and not np.isnan(got).any()
        np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    exact = by_hand(*args)
    for got, want in zip(fused, exact):
        np.testing.assert_allclose(got, want, rtol=10 * TOLERANCE[dtype], atol=10 * TOLERANCE[dtype])
    assert np.all(fused[1][0, :4] == -np.inf) and np.all(fused[0][0, :4] == 0)


@pytest.mark.parametrize("kernel, backend", [("auto", "numpy"), ("numpy", "numpy"), *FUSED])
def test_merge_in_place_and_non_contiguous(kernel, backend):
    o1, l1, o2, l2 = partials(np.float64, seed=1)
    want = lse_merge(o1, l1, o2, l2, kernel="numpy")
    xp_o1, xp_l1, xp_o2, xp_l2 = (BACKENDS[backend](a) for a in (o1, l1, o2, l2))
    acc_o, acc_l = xp_o1.copy(), xp_l1.copy()
    got = lse_merge(acc_o, acc_l, xp_o2, xp_l2, out=(acc_o, acc_l), kernel=kernel)
    assert got[0] is acc_o and got[1] is acc_l
    np.testing.assert_allclose(to_host(acc_o), want[0], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(to_host(acc_l), want[1], rtol=1e-14, atol=1e-14)
    fortran_o1, strided_o2 = xp_o1.T.copy().T, xp_o2.repeat(2, axis=-1)[..., ::2]
    strided = lse_merge(fortran_o1, xp_l1, strided_o2, xp_l2, kernel=kernel)
    np.testing.assert_allclose(to_host(strided[0]), want[0], rtol=1e-14, atol=1e-14)


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


ALL_KERNELS = [("auto", "numpy"), ("numpy", "numpy"), ("auto", "fakegpu"), *FUSED]


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
    np.testing.assert_allclose(to_host(got_l), by_hand(o1, l1, o2, l2)[1], rtol=1e-14)
