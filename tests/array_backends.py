"""The array backends every collective test runs on: numpy, the fake GPU (host memory behind
``__cuda_array_interface__``: the device code paths on any machine) and, where a CUDA device is
visible, real CuPy arrays. CI has no GPU, so there the list is numpy and the fake GPU."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from hpcrt import to_fake_gpu
from hpcrt.topology.discovery import gpu_count


def _device_backends() -> dict[str, Callable[[np.ndarray], Any]]:
    backends: dict[str, Callable[[np.ndarray], Any]] = {"numpy": lambda a: a, "fakegpu": to_fake_gpu}
    if gpu_count() > 0:
        import cupy
        backends["cupy"] = cupy.asarray
    return backends


BACKENDS = _device_backends()
"""Backend name → a function putting a host array on that backend."""


def to_backend(x: Any, backend: str) -> Any:
    """``x`` (an array or a tuple of arrays) on ``backend``."""
    convert = BACKENDS[backend]
    return tuple(convert(part) for part in x) if isinstance(x, tuple) else convert(x)


def to_host(array: Any) -> np.ndarray:
    """A numpy copy of an array of any backend (CuPy and the fake GPU both have ``.get()``)."""
    return array if isinstance(array, np.ndarray) else array.get()


def rotating_backend(seed: int) -> str:
    """The backend case ``seed`` runs on, so that every backend meets every case across sizes."""
    names = list(BACKENDS)
    return names[seed % len(names)]
