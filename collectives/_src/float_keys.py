"""Floats as integers ordered as their values with every NaN above all numbers, so that MPI's
integer max scans floats NaN-propagating: MPI's own float max keeps or drops a NaN depending on
the order it meets the values in."""

from __future__ import annotations

from typing import Optional

import numpy as np

_KEY_DTYPES = {np.dtype(np.float32): np.dtype(np.int32), np.dtype(np.float64): np.dtype(np.int64)}


def key_dtype(dtype: np.dtype) -> Optional[np.dtype]:
    """The integer dtype of ``dtype``'s keys, or None where it has none (not float32/64)."""
    return _KEY_DTYPES.get(np.dtype(dtype))


def _flip_negatives(keys: np.ndarray) -> None:
    """Reverse the order of the negative integers' low bits in place (the map is its own inverse):
    a float's bits, read as an integer, then order as the float does (-0 just below +0)."""
    high = keys >> (8 * keys.itemsize - 1)  # -1 where the sign bit is set, else 0
    high &= np.iinfo(keys.dtype).max
    keys ^= high


def to_keys(values: np.ndarray, keys: np.ndarray) -> None:
    """Write the keys of float array ``values`` into ``keys`` (of :func:`key_dtype`; it may be
    ``values`` itself, viewed as integers): every NaN becomes the largest key."""
    nans = np.isnan(values) if np.isnan(np.dot(values.reshape(-1), values.reshape(-1))) else None
    keys[...] = values.view(keys.dtype)
    _flip_negatives(keys)
    if nans is not None:
        keys[nans] = np.iinfo(keys.dtype).max


def from_keys(keys: np.ndarray) -> None:
    """Turn keys back into their floats in place (the largest key into a NaN)."""
    _flip_negatives(keys)
