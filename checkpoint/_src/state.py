"""Turning a nested state dict into flat entries (arrays, shards, JSON values) and back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from hpcrt._src.backends import backend_of

from .errors import StateError

ALLOWED_KINDS = "biufc"


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
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> list:
        return [self.key, self.dtype, list(self.shape),
                None if self.global_shape is None else list(self.global_shape),
                None if self.offset is None else list(self.offset), self.buf_offset]

    @classmethod
    def from_json(cls, row: list) -> "ArrayEntry":
        key, dtype, shape, gshape, offset, buf_offset = row
        return cls(key, dtype, tuple(shape), None if gshape is None else tuple(gshape),
                   None if offset is None else tuple(offset), buf_offset)


@dataclass
class FlatState:
    """A validated state: its arrays (with layout) and its JSON-able values, serialized at save time."""

    entries: list
    arrays: list
    json_text: str
    nbytes: int


ALIGN = 64


def flatten(state: Any) -> FlatState:
    """Validate ``state`` and lay its arrays out in one host buffer (64-byte aligned)."""
    if not isinstance(state, dict):
        raise StateError(f"checkpoint state must be a dict, got {type(state).__name__}")
    entries, arrays, values = [], [], {}
    offset = 0
    for key, value in sorted(_leaves(state, ""), key=lambda leaf: leaf[0]):  # one order on every rank
        if isinstance(value, Shard) or _is_array(value):
            entry = _array_entry(key, value, offset)
            entries.append(entry)
            arrays.append(value.array if isinstance(value, Shard) else value)
            offset += -(-entry.nbytes // ALIGN) * ALIGN
        else:
            try:
                json.dumps(value, allow_nan=True)
            except (TypeError, ValueError) as exc:
                raise StateError(f"checkpoint state key {key!r}: {type(value).__name__} is neither an array, "
                                 f"a Shard nor a JSON-able value ({exc})") from None
            values[key] = value
    return FlatState(entries, arrays, json.dumps(values), offset)


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


def _array_entry(key: str, value: Any, buf_offset: int) -> ArrayEntry:
    array = value.array if isinstance(value, Shard) else value
    if not _is_array(array):
        raise StateError(f"checkpoint state key {key!r}: Shard.array must be a numpy or CuPy array, "
                         f"got {type(array).__name__}")
    dtype = np.dtype(array.dtype)
    if dtype.kind not in ALLOWED_KINDS:
        raise StateError(f"checkpoint state key {key!r}: dtype {dtype} is not supported "
                         f"(bool, integer, float and complex arrays only)")
    shape = tuple(int(n) for n in array.shape)
    if not isinstance(value, Shard):
        return ArrayEntry(key, dtype.str, shape, buf_offset=buf_offset)
    gshape, offset = value.global_shape, value.offset
    if not shape:
        raise StateError(f"checkpoint state key {key!r}: a Shard needs at least one dimension; "
                         f"save a 0-d array as a plain array")
    if len(gshape) != len(shape) or len(offset) != len(shape) or any(
            o < 0 or o + n > g for o, n, g in zip(offset, shape, gshape)):
        raise StateError(f"checkpoint state key {key!r}: shard of shape {shape} at offset {offset} does not "
                         f"fit in global shape {gshape}")
    return ArrayEntry(key, dtype.str, shape, gshape, offset, buf_offset)


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
