"""Array backends: numpy, CuPy and the fake GPU behind one small interface — the array module
of an array, whether it lives on a device, stream sync before MPI reads it, host copies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hpcrt.backends.fakegpu import FakeGpuArray, fakecupy


@dataclass(frozen=True)
class ArrayBackend:
    """What the runtime needs to know of one kind of array."""

    name: str
    xp: Any
    on_device: bool
    synchronize: Callable[[Any], None]
    to_host: Callable[[Any], np.ndarray]
    copy_from_host: Callable[[Any, np.ndarray], None]


def _no_sync(array: Any) -> None:
    """Host memory is coherent: nothing to wait for."""


def _numpy_copy_from_host(dst: np.ndarray, src: np.ndarray) -> None:
    dst[...] = src


NUMPY = ArrayBackend("numpy", np, False, _no_sync, np.asarray, _numpy_copy_from_host)


class _FakeStream:
    """Counts synchronizations so tests can check that MPI never reads an unsynced buffer."""

    syncs = 0

    @classmethod
    def synchronize(cls, array: Any) -> None:
        cls.syncs += 1


def _fake_copy_from_host(dst: FakeGpuArray, src: np.ndarray) -> None:
    dst[...] = src


FAKE_GPU = ArrayBackend("fakegpu", fakecupy, True, _FakeStream.synchronize, lambda a: a.get(),
                        _fake_copy_from_host)


def fake_stream_syncs() -> int:
    """How many times a fake GPU buffer was synchronized (for tests)."""
    return _FakeStream.syncs


def _cupy_backend() -> ArrayBackend | None:
    try:
        import cupy
    except ImportError:
        return None

    def synchronize(array: Any) -> None:
        cupy.cuda.get_current_stream().synchronize()

    def copy_from_host(dst: Any, src: np.ndarray) -> None:
        dst.set(src) if dst.flags.c_contiguous else dst.__setitem__(Ellipsis, cupy.asarray(src))

    return ArrayBackend("cupy", cupy, True, synchronize, cupy.asnumpy, copy_from_host)


_CUPY: list = []


def cupy_backend() -> ArrayBackend | None:
    """The CuPy backend, or None where CuPy is not installed (imported once, on first use)."""
    if not _CUPY:
        _CUPY.append(_cupy_backend())
    return _CUPY[0]


_KDL_CUDA = (2, 3, 13)
"""DLPack device types of CUDA memory: kDLCUDA, kDLCUDAHost, kDLCUDAManaged."""
_BY_TYPE: dict = {}
"""Backend per array type, worked out once by protocol (the protocols an array speaks are its type's)."""


def backend_of(array: Any) -> ArrayBackend:
    """The backend an array belongs to, by the protocol it speaks: ``__cuda_array_interface__`` or a
    CUDA DLPack device (CuPy, the fake GPU), else the buffer protocol of a numpy array; TypeError otherwise."""
    backend = _BY_TYPE.get(type(array))
    if backend is None:
        backend = _by_protocol(array)
        _BY_TYPE[type(array)] = backend
    return backend


def _by_protocol(array: Any) -> ArrayBackend:
    kind = type(array)
    on_cuda = hasattr(kind, "__cuda_array_interface__") or (
        hasattr(kind, "__dlpack_device__") and array.__dlpack_device__()[0] in _KDL_CUDA)
    if on_cuda:
        return _device_backend(array)
    if isinstance(array, np.ndarray):
        return NUMPY
    raise TypeError(f"expected a numpy or CuPy array, got {kind.__name__}")


def _device_backend(array: Any) -> ArrayBackend:
    """The backend of an array in CUDA memory: the one whose namespace the array names
    (``__array_namespace__``), CuPy where it names none that hpcrt knows."""
    namespace = getattr(array, "__array_namespace__", None)
    if namespace is not None and namespace() is FAKE_GPU.xp:
        return FAKE_GPU
    backend = cupy_backend()
    if backend is None:
        raise TypeError(f"a {type(array).__name__} lives in GPU memory, which needs CuPy: pip install cupy-cuda12x")
    return backend


def get_xp(array: Any) -> Any:
    """The array module (numpy, cupy, or the fake-GPU namespace) that operates on ``array``."""
    return backend_of(array).xp


def is_device_array(array: Any) -> bool:
    return backend_of(array).on_device
