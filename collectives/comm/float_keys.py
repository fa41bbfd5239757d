"""Floats as integers ordered as their values with every NaN above all numbers, so that MPI's
integer max scans floats NaN-propagating: MPI's own float max keeps or drops a NaN depending on
the order it meets the values in."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

_KEY_DTYPES = {np.dtype(np.float32): np.dtype(np.int32), np.dtype(np.float64): np.dtype(np.int64)}
_SIGN_SHIFT = {key: np.array(8 * key.itemsize - 1, dtype=key) for key in _KEY_DTYPES.values()}
_LARGEST = {key: np.array(np.iinfo(key).max, dtype=key) for key in _KEY_DTYPES.values()}
"""Per key dtype, as 0-d arrays of it: numpy then skips converting a Python int on every call."""


def key_dtype(dtype: np.dtype) -> Optional[np.dtype]:
    """The integer dtype of ``dtype``'s keys, or None where it has none (not float32/64)."""
    return _KEY_DTYPES.get(np.dtype(dtype))


def _flip_negatives(bits: np.ndarray, out: np.ndarray) -> None:
    """``bits`` with the low bits of the negative integers inverted, into ``out`` (it may be
    ``bits``; the map is its own inverse): a float's bits, read as an integer, then order as the
    float does (-0 just below +0)."""
    high = np.right_shift(bits, _SIGN_SHIFT[bits.dtype])  # -1 where the sign bit is set, else 0
    np.bitwise_xor(bits, np.bitwise_and(high, _LARGEST[bits.dtype]), out=out)


def to_keys(values: np.ndarray, keys: np.ndarray) -> None:
    """Write the keys of float array ``values`` into ``keys`` (of :func:`key_dtype`; it may be
    ``values`` itself, viewed as integers): every NaN becomes the largest key."""
    nans = np.isnan(values) if math.isnan(values.min()) else None  # min is NaN only where one is
    _flip_negatives(values.view(keys.dtype), keys)
    if nans is not None:
        keys[nans] = _LARGEST[keys.dtype]


def from_keys(keys: np.ndarray) -> None:
    """Turn keys back into their floats in place (the largest key into a NaN)."""
    _flip_negatives(keys, keys)
