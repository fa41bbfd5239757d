"""A fake GPU array: host memory that exposes ``__cuda_array_interface__`` and refuses implicit
conversion to numpy, as CuPy does, so CPU-only CI walks the GPU code paths (stream sync,
staging, CUDA-aware hand-off to MPI)."""

from __future__ import annotations

import functools
import types
from typing import Any

import numpy as np


class FakeGpuArray(np.lib.mixins.NDArrayOperatorsMixin):
    """Device-like array backed by a host numpy array; ``.get()`` copies it to the host."""

    __slots__ = ("_host",)

    def __init__(self, host: np.ndarray):
        self._host = host

    # --- what MPI and the runtime see -----------------------------------------------------------
    @property
    def __cuda_array_interface__(self) -> dict:
        iface = self._host.__array_interface__
        return {"shape": iface["shape"], "typestr": iface["typestr"], "data": iface["data"],
                "strides": iface["strides"], "version": 3, "stream": None}

    def __array_namespace__(self, api_version: Any = None) -> Any:
        """The namespace whose functions operate on this array (the array API's protocol)."""
        return fakecupy

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError("implicit conversion of a (fake) GPU array to a host array is not allowed; "
                        "call .get() to copy it to the host")

    def get(self) -> np.ndarray:
        return self._host.copy()

    # --- numpy-like surface -----------------------------------------------------------------------
    shape = property(lambda self: self._host.shape)
    dtype = property(lambda self: self._host.dtype)
    ndim = property(lambda self: self._host.ndim)
    size = property(lambda self: self._host.size)
    nbytes = property(lambda self: self._host.nbytes)
    strides = property(lambda self: self._host.strides)
    flags = property(lambda self: self._host.flags)
    T = property(lambda self: FakeGpuArray(self._host.T))

    def __len__(self) -> int:
        return len(self._host)

    def __getitem__(self, index: Any) -> Any:
        return _wrap(self._host[_unwrap(index)])

    def __setitem__(self, index: Any, value: Any) -> None:
        self._host[_unwrap(index)] = _unwrap(value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # never leak __array_interface__ & co.: host access must be explicit
            raise AttributeError(name)
        attr = getattr(self._host, name)
        return _wrapped_callable(attr) if callable(attr) else _wrap(attr)

    def __repr__(self) -> str:
        return f"FakeGpuArray({self._host!r})"

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(o) for o in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **kwargs))

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, FakeGpuArray):
        return obj._host
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return FakeGpuArray(obj)
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _wrapped_callable(func: Any) -> Any:
    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))
    return call


class _FakeCupyNamespace(types.SimpleNamespace):
    """An ``xp`` for fake GPU arrays: numpy's functions, returning :class:`FakeGpuArray`."""

    ndarray = FakeGpuArray

    def __getattr__(self, name: str) -> Any:
        attr = getattr(np, name)
        if isinstance(attr, (type, types.ModuleType)) or not callable(attr):
            return attr
        return _wrapped_callable(attr)

    @staticmethod
    def asnumpy(array: Any) -> np.ndarray:
        return array.get() if isinstance(array, FakeGpuArray) else np.asarray(array)


fakecupy = _FakeCupyNamespace()


def to_fake_gpu(array: Any) -> FakeGpuArray:
    """Copy a host array onto the fake device."""
    return FakeGpuArray(np.array(array, copy=True))
