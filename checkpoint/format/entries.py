"""Turning a nested state dict into flat entries (arrays, shards, JSON values) and back."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from hpcrt.backends.arrays import backend_of

from hpcrt.checkpoint.errors import StateError

ALLOWED_KINDS = "biufc"
PACK_MAX_BYTES = 16 << 10
"""Plain (per-rank) arrays up to this size are packed into one dataset of the rank file (an HDF5
dataset costs about 0.5 KiB of file and a fraction of a millisecond to write and to read)."""
PACKED_KEY = "_hpcrt_packed"
"""The rank file's dataset of packed arrays; no state may have a top-level key of that name."""
MAX_NDIM = 32


@dataclass(frozen=True)
class Shard:
    """A rank's piece of a global array: ``array`` sits at ``offset`` (one index per dim) of ``global_shape``."""

    array: Any
    global_shape: tuple
    offset: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "global_shape", tuple(int(n) for n in self.global_shape))
        object.__setattr__(self, "offset", tuple(int(n) for n in self.offset))


@dataclass(frozen=True)
class ArrayEntry:
    """Layout of one array of a rank's state: where it sits in the snapshot buffer and, for a
    shard, in its global array (``global_shape`` is None for a plain per-rank array)."""

    key: str
    dtype: str
    shape: tuple
    global_shape: Optional[tuple] = None
    offset: Optional[tuple] = None
    buf_offset: int = 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    @property
    def packed(self) -> bool:
        """Whether a rank file (of format version 2) keeps it in the packed dataset."""
        return self.global_shape is None and self.nbytes <= PACK_MAX_BYTES

    def to_json(self) -> list:
        return [self.key, self.dtype, list(self.shape),
                None if self.global_shape is None else list(self.global_shape),
                None if self.offset is None else list(self.offset), self.buf_offset]

    @classmethod
    def from_json(cls, row: Any) -> "ArrayEntry":
        """An entry from its JSON row, every field checked (rows come from files anyone may have
        edited); raises ValueError saying what is wrong."""
        if not isinstance(row, list) or len(row) != 6:
            raise ValueError(f"array row {_short(row)} is not a list of 6 fields")
        key, dtype, shape, gshape, offset, buf_offset = row
        if not isinstance(key, str) or not key or "\0" in key or any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"array key {_short(key)} is not a key a state can have")
        try:
            kind = np.dtype(dtype).kind if isinstance(dtype, str) else None
        except (TypeError, ValueError):
            kind = None
        if kind is None or kind not in ALLOWED_KINDS or np.dtype(dtype).str != dtype:
            raise ValueError(f"array {key!r}: dtype {_short(dtype)} is not one hpcrt writes")
        shape = _int_tuple(key, "shape", shape)
        if (gshape is None) != (offset is None):
            raise ValueError(f"array {key!r}: global shape and offset must both be given or both be null")
        if gshape is not None:
            gshape, offset = _int_tuple(key, "global shape", gshape), _int_tuple(key, "offset", offset)
            if not shape or len(gshape) != len(shape) or len(offset) != len(shape) or any(
                    o + n > g for o, n, g in zip(offset, shape, gshape)):
                raise ValueError(f"array {key!r}: shard of shape {shape} at offset {offset} does not fit in "
                                 f"global shape {gshape}")
        if not isinstance(buf_offset, int) or isinstance(buf_offset, bool) or buf_offset < 0:
            raise ValueError(f"array {key!r}: buffer offset {_short(buf_offset)} is not a non-negative integer")
        return cls(key, dtype, shape, gshape, offset, buf_offset)


def _int_tuple(key: str, what: str, value: Any) -> tuple:
    if not isinstance(value, list) or len(value) > MAX_NDIM or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 62 for n in value):
        raise ValueError(f"array {key!r}: {what} {_short(value)} is not a list of non-negative integers")
    return tuple(value)


@dataclass
class FlatState:
    """A validated state: its arrays (with layout) and its JSON-able values, serialized once at
    save time (``json_keys``: their keys, sorted, so that ranks compare them without parsing)."""

    entries: list
    arrays: list
    json_text: str
    nbytes: int
    json_keys: tuple = ()


ALIGN = 64


def flatten(state: Any) -> FlatState:
    """Validate ``state`` and lay its arrays out in one host buffer (64-byte aligned): the arrays
    that rank files pack first, in key order, then the others, in key order."""
    if not isinstance(state, dict):
        raise StateError(f"checkpoint state must be a dict, got {type(state).__name__}")
    if PACKED_KEY in state:
        raise StateError(f"checkpoint state key {PACKED_KEY!r} is reserved (the rank files' packed arrays)")
    small, large, values = [], [], {}
    for key, value in sorted(_leaves(state, ""), key=lambda leaf: leaf[0]):  # one order on every rank
        if type(value) is np.ndarray or isinstance(value, Shard) or _is_array(value):
            layout = _array_layout(key, value)
            (small if layout[2] is None and layout[4] <= PACK_MAX_BYTES else large).append(layout)
        else:
            values[key] = value
    try:
        json_text = json.dumps(values)
    except (TypeError, ValueError):
        for key, value in values.items():  # name the first value that is not JSON-able
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise StateError(f"checkpoint state key {key!r}: {type(value).__name__} is neither an array, "
                                 f"a Shard nor a JSON-able value ({exc})") from None
        raise
    entries, arrays, offset = [], [], 0
    for key, dtype, gshape, shape, nbytes, offsets, array in small + large:
        entries.append(ArrayEntry(key, dtype, shape, gshape, offsets, offset))
        arrays.append(array)
        offset += -(-nbytes // ALIGN) * ALIGN
    return FlatState(entries, arrays, json_text, offset, tuple(sorted(values)))


def unflatten(flat: dict) -> dict:
    """Nested dicts from ``{"a/b": value}``."""
    state: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = state
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return state


def _leaves(node: dict, prefix: str):
    for key, value in node.items():
        if not isinstance(key, str) or not key or "/" in key or key in (".", ".."):
            raise StateError(f"checkpoint state key {prefix + str(key)!r}: keys must be non-empty strings "
                             f"without '/' (they become HDF5 paths)")
        path = prefix + key
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + "/")
        else:
            yield path, value


def _is_array(value: Any) -> bool:
    try:
        backend_of(value)
    except TypeError:
        return False
    return True


def _array_layout(key: str, value: Any) -> tuple:
    """``(key, dtype str, global shape, shape, nbytes, offset, array)`` of an array or a Shard, checked."""
    array = value.array if isinstance(value, Shard) else value
    if type(array) is not np.ndarray and not _is_array(array):
        raise StateError(f"checkpoint state key {key!r}: Shard.array must be a numpy or CuPy array, "
                         f"got {type(array).__name__}")
    dtype = array.dtype if type(array) is np.ndarray else np.dtype(array.dtype)
    if dtype.kind not in ALLOWED_KINDS:
        raise StateError(f"checkpoint state key {key!r}: dtype {dtype} is not supported "
                         f"(bool, integer, float and complex arrays only)")
    shape = array.shape if type(array) is np.ndarray else tuple(int(n) for n in array.shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if not isinstance(value, Shard):
        return key, dtype.str, None, shape, nbytes, None, array
    gshape, offset = value.global_shape, value.offset
    if not shape:
        raise StateError(f"checkpoint state key {key!r}: a Shard needs at least one dimension; "
                         f"save a 0-d array as a plain array")
    if len(gshape) != len(shape) or len(offset) != len(shape) or any(
            o < 0 or o + n > g for o, n, g in zip(offset, shape, gshape)):
        raise StateError(f"checkpoint state key {key!r}: shard of shape {shape} at offset {offset} does not "
                         f"fit in global shape {gshape}")
    return key, dtype.str, gshape, shape, nbytes, offset, array


def check_layouts(layouts: list, json_keys: list) -> None:
    """Raise :class:`StateError` naming the key and the ranks when ranks disagree on the keys,
    kinds, dtypes or global shapes of a save, or when a sharded key's shards do not tile its
    global array (replicas of one shard are allowed, partial overlaps and gaps are not)."""
    _same_on_all("JSON value keys", [sorted(keys) for keys in json_keys])
    keysets = [[e.key for e in entries] for entries in layouts]
    _same_on_all("array keys", keysets)
    for i, key in enumerate(keysets[0]):
        column = [entries[i] for entries in layouts]
        _same_on_all(f"key {key!r}: dtype and global shape",
                     [(e.dtype, e.global_shape is not None and list(e.global_shape)) for e in column])
        if column[0].global_shape is not None:
            _check_tiling(key, column)


def _same_on_all(what: str, values: list) -> None:
    groups: dict = {}
    for rank, value in enumerate(values):
        groups.setdefault(repr(value), (value, []))[1].append(rank)
    if len(groups) > 1:
        described = "; ".join(f"ranks {ranks}: {_short(value)}" for value, ranks in groups.values())
        raise StateError(f"ranks disagree on the {what} of this save — {described}")


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _check_tiling(key: str, column: list) -> None:
    boxes = sorted({(e.offset, e.shape) for e in column if 0 not in e.shape})
    lo = np.array([b[0] for b in boxes], dtype=np.int64).reshape(len(boxes), -1)
    hi = lo + np.array([b[1] for b in boxes], dtype=np.int64).reshape(len(boxes), -1)
    overlap = np.all((lo[:, None] < hi[None, :]) & (lo[None, :] < hi[:, None]), axis=-1)
    np.fill_diagonal(overlap, False)
    if overlap.any():
        a, b = (boxes[i] for i in np.argwhere(overlap)[0])
        owners = [[r for r, e in enumerate(column) if (e.offset, e.shape) == box] for box in (a, b)]
        raise StateError(f"key {key!r}: shards overlap — offset {a[0]} shape {a[1]} on ranks {owners[0]} and "
                         f"offset {b[0]} shape {b[1]} on ranks {owners[1]}")
    covered = int(np.prod(hi - lo, axis=-1).sum()) if boxes else 0
    total = int(np.prod(column[0].global_shape, dtype=np.int64))
    if covered != total:
        raise StateError(f"key {key!r}: the shards of ranks 0..{len(column) - 1} cover {covered} of the "
                         f"{total} elements of global shape {column[0].global_shape}")
