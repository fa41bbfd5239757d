"""Array backends, the fake GPU, the pinned pool and staging, checked against numpy on one process."""

import numpy as np
import pytest

from hpcrt import FakeGpuArray, backend_of, get_xp, is_device_array, to_fake_gpu
from hpcrt.backends.arrays import fake_stream_syncs
from hpcrt.backends.cuda_aware import decide_cuda_aware, probe_cuda_support
from hpcrt.backends.fakegpu import fakecupy
from hpcrt.backends.staging import PinnedPool, Staging


def test_fake_gpu_behaves_like_a_device_array():
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    dev = to_fake_gpu(host)
    iface = dev.__cuda_array_interface__
    assert iface["shape"] == (3, 4) and iface["typestr"] == "<f4" and iface["version"] == 3
    assert iface["data"][0] != host.__array_interface__["data"][0]  # a copy, not the caller's memory
    with pytest.raises(TypeError, match="implicit conversion"):
        np.asarray(dev)
    result = fakecupy.sum(dev * 2 + 1, axis=0)
    assert isinstance(result, FakeGpuArray)
    np.testing.assert_array_equal(result.get(), (host * 2 + 1).sum(axis=0))
    np.testing.assert_array_equal(dev[1:, ::2].get(), host[1:, ::2])
    assert isinstance(fakecupy.zeros((2,), dtype=fakecupy.float64), FakeGpuArray)


def test_backend_of():
    assert backend_of(np.zeros(1)).name == "numpy" and get_xp(np.zeros(1)) is np
    assert backend_of(to_fake_gpu(np.zeros(1))).name == "fakegpu" and is_device_array(to_fake_gpu(np.zeros(1)))
    with pytest.raises(TypeError, match="numpy or CuPy array"):
        backend_of([1, 2])


class _CudaBuffer:
    """Speaks the CUDA array interface and names the fake GPU's namespace, with no type in common with it."""

    __cuda_array_interface__ = {"shape": (1,), "typestr": "<f8", "data": (0, False), "version": 3}

    def __array_namespace__(self, api_version=None):
        return fakecupy


class _DLPackOn:
    """Speaks DLPack only, on the device type given (1: host memory, 2: CUDA)."""

    def __init__(self, device_type: int):
        self.device_type = device_type

    def __dlpack__(self, stream=None):
        raise NotImplementedError

    def __dlpack_device__(self):
        return self.device_type, 0


class _Subclass(np.ndarray):
    pass


def test_backends_are_recognised_by_protocol_not_type():
    assert backend_of(_CudaBuffer()) is backend_of(to_fake_gpu(np.zeros(1)))  # the path CuPy takes
    assert backend_of(np.zeros(2).view(_Subclass)).name == "numpy"
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(TypeError, match="lives in GPU memory, which needs CuPy"):
            backend_of(_DLPackOn(2))
    else:
        assert backend_of(_DLPackOn(2)).name == "cupy"
    with pytest.raises(TypeError, match="numpy or CuPy array, got _DLPackOn"):
        backend_of(_DLPackOn(1))  # host memory hpcrt cannot operate on: no numpy array


def test_pool_reuses_buffers_up_to_its_limit():
    pool = PinnedPool(limit_bytes=4096)
    a = pool.acquire(1000)
    assert a.nbytes == 1024
    pool.release(a)
    assert pool.acquire(600) is a and pool.reuses == 1
    big = pool.acquire(1 << 20)
    pool.release(big)  # over the limit: dropped, not pooled
    assert pool.pooled_bytes == 0 and pool.acquire(1 << 20) is not big


@pytest.mark.parametrize("cuda_aware", [True, False])
def test_staging_round_trip_of_a_fake_gpu_array(cuda_aware):
    staging = Staging(cuda_aware, PinnedPool(1 << 20))
    src = to_fake_gpu(np.arange(10.0))
    syncs = fake_stream_syncs()
    with staging.readable(src) as buf:
        direct = isinstance(buf, FakeGpuArray)
        np.testing.assert_array_equal(buf.get() if direct else buf, np.arange(10.0))
    assert direct == cuda_aware
    assert fake_stream_syncs() == syncs + (1 if cuda_aware else 0)
    dst = to_fake_gpu(np.zeros(10))
    with staging.writable(dst) as buf:
        buf[...] = np.arange(10.0)[::-1] if not cuda_aware else to_fake_gpu(np.arange(10.0)[::-1])
    np.testing.assert_array_equal(dst.get(), np.arange(10.0)[::-1])
    if not cuda_aware:
        assert staging.pool.reuses >= 1  # the receive reused the send's host buffer


def test_non_contiguous_numpy_is_copied_both_ways():
    staging = Staging(False, PinnedPool(1 << 20))
    base = np.arange(20.0).reshape(4, 5)
    view = base[:, 1]
    with staging.readable(view) as buf:
        assert buf.flags.c_contiguous
        np.testing.assert_array_equal(buf, base[:, 1])
    with staging.writable(view) as buf:
        buf[...] = -1
    np.testing.assert_array_equal(base[:, 1], -np.ones(4))


def test_cuda_aware_decision_order():
    assert decide_cuda_aware("yes", probe=(False, "probe says no")).enabled
    no = decide_cuda_aware("no", "environment variable HPCRT_CUDA_AWARE", probe=(True, "probe says yes"))
    assert not no.enabled and "HPCRT_CUDA_AWARE" in no.reason
    assert decide_cuda_aware("auto", probe=(True, "probe says yes")).enabled
    staged = decide_cuda_aware("auto", probe=(None, "no symbol"))
    assert not staged.enabled and "no symbol" in staged.reason and "staged" in staged.reason


def test_probe_of_a_library_without_the_symbol():
    answer, how = probe_cuda_support("libc.so.6")
    assert answer is None and "no MPIX_Query_cuda_support" in how
