"""The HDF5 format: one file per rank (its arrays at their key paths, JSON values in a root
attribute) and a global file whose virtual datasets stitch the shards into global arrays.

Format version 2 packs a rank's small plain arrays (up to ``PACK_MAX_BYTES``, not shards) into one
uint8 dataset, ``_hpcrt_packed``, each at a 64-byte aligned offset listed in its ``hpcrt_index``
attribute (JSON ``[[key, dtype, shape, offset], ...]``): an HDF5 dataset costs about 0.5 KiB of
file and a fraction of a millisecond to create and to open, which dominated a state of thousands
of small arrays. Files without small plain arrays are written as version 1, as before.

Data is placed with early allocation and written with ``os.pwrite`` (GIL-free, no HDF5 copy) in
pieces whose writeback starts as soon as each is written, so that the disk works while the CPU
copies the next piece into the page cache. The file checksum (xxh3-128) splices the written
buffers, hashed from memory while the file is being fsynced, with the HDF5 metadata read back."""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import h5py
import numpy as np
import xxhash

import hpcrt

from hpcrt.checkpoint.files.commit import atomic_path
from hpcrt.checkpoint.files.safety import Refused, open_regular
from hpcrt.checkpoint.format.entries import PACKED_KEY
from hpcrt.checkpoint.save.snapshot import Snapshot

FORMAT_NAME = "hpcrt-checkpoint"
FORMAT_VERSION = 2
"""The newest format this hpcrt reads and writes (2: small arrays packed; 1: every array a dataset)."""
JSON_ATTR = "hpcrt_json"
INDEX_ATTR = "hpcrt_index"
READ_CHUNK = 16 << 20
HASH_SLICE = 1 << 20
WRITEBACK_PIECE = 8 << 20
PROBE_READ = 4096
ALIGNMENT = 64
"""Every dataset of a rank file starts at a multiple of this, so that a restore can hand it back
as a view of the file image that is aligned for any dtype."""
SYNC_FILE_RANGE_WRITE = 2
BESIDE = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hpcrt-ckpt-beside")
"""Threads for work that waits on the disk while other threads compute (a file's fsync, a new step's
folders); kept across saves, since starting a thread costs half a millisecond here."""


def _sync_file_range() -> Optional[Callable[..., int]]:
    """libc's ``sync_file_range`` (Linux; not in ``os``), or None where there is none."""
    try:
        function = ctypes.CDLL(None).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return function


SYNC_FILE_RANGE = _sync_file_range()


def file_attrs(step: int, world_size: int, **extra: object) -> dict:
    """The root attributes every file of a checkpoint carries (a rank file that packs arrays
    raises ``format_version`` to 2)."""
    return {"format": FORMAT_NAME, "format_version": 1, "hpcrt_version": hpcrt.__version__,
            "step": step, "world_size": world_size, **extra}


def _dcpl() -> h5py.h5p.PropDCID:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def write_rank_file(path: Path, snap: Snapshot, attrs: dict, before_rename: Optional[Callable[[], None]] = None,
                    sync_dir: bool = True, while_syncing: Callable[[], None] = lambda: None) -> tuple[int, str]:
    """Write ``snap`` to ``path`` atomically (``sync_dir``: see :func:`atomic_path`); returns the
    file's size and xxh3-128 hex digest. The datasets are created first, so that their places are
    known before any attribute exists; the data goes there while HDF5 still holds the file open,
    and the attributes and the rest of HDF5's metadata are written while the disk writes the data.
    ``while_syncing`` runs once the file is hashed, while the disk still syncs it (rank 0 writes
    ``global.h5`` there, in this thread: two threads running h5py take turns on its lock and the GIL)."""
    with atomic_path(path, before_rename, sync_dir, fsynced=True) as tmp:
        f = h5py.File(tmp, "w", alignment_threshold=1, alignment_interval=ALIGNMENT)
        fd = -1
        try:
            placed, packed = _create_datasets(f, snap)
            fd = os.open(tmp, os.O_RDWR)
            for offset, raw in placed:
                _write_with_early_writeback(fd, memoryview(raw), offset)
            f.attrs.update(attrs)
            if packed:
                f.attrs["format_version"] = 2
            f.attrs[JSON_ATTR] = snap.json_text
            f.close()  # HDF5 writes its metadata here (a full disk fails here too)
            size = os.fstat(fd).st_size
            syncer = BESIDE.submit(os.fsync, fd)
            try:  # hash the same buffers from memory while the disk works (fsync holds no CPU, nor the GIL)
                digest = _spliced_digest(fd, size, placed)
                while_syncing()
            finally:
                syncer.result()
        finally:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(Exception):  # closed already, or failing again for the error raised
                f.close()
    return size, digest


def _create_datasets(f: h5py.File, snap: Snapshot) -> tuple:
    """Every array's dataset, allocated at creation, and the packed dataset of the small plain
    arrays (the snapshot buffer's first bytes: :func:`flatten` lays them out there); returns
    ``[(file offset, bytes)]`` in file order for the data HDF5 leaves to the caller (a scalar gets
    no early allocation: HDF5 writes it), and whether anything was packed."""
    placed = []
    packed = [e for e in snap.entries if e.packed]
    if packed:
        end = max(e.buf_offset + e.nbytes for e in packed)
        dset = f.create_dataset(PACKED_KEY, shape=(end,), dtype=np.uint8, dcpl=_dcpl())
        dset.attrs[INDEX_ATTR] = json.dumps([[e.key, e.dtype, list(e.shape), e.buf_offset] for e in packed],
                                            separators=(",", ":"))
        if (offset := dset.id.get_offset()) is not None:
            placed.append((offset, snap.buffer[:end]))
    for entry in snap.entries:
        if entry.packed:
            continue
        dset = f.create_dataset(entry.key, shape=entry.shape, dtype=entry.dtype, dcpl=_dcpl())
        if entry.global_shape is not None:
            dset.attrs["global_shape"] = np.asarray(entry.global_shape, dtype=np.int64)
            dset.attrs["offset"] = np.asarray(entry.offset, dtype=np.int64)
        offset = dset.id.get_offset()
        if offset is not None:
            placed.append((offset, snap.buffer[entry.buf_offset:entry.buf_offset + entry.nbytes]))
        elif entry.nbytes:
            dset[()] = snap.view(entry)
    return sorted(placed, key=lambda item: item[0]), bool(packed)


def _write_with_early_writeback(fd: int, data: memoryview, offset: int) -> None:
    """``pwrite`` ``data`` a piece at a time, starting each piece's writeback at once
    (``SYNC_FILE_RANGE_WRITE`` only queues the I/O, GIL released): the disk writes a piece while
    the next is copied into the page cache. Durability still comes from the fsync that follows."""
    for start in range(0, len(data), WRITEBACK_PIECE):
        piece = data[start:start + WRITEBACK_PIECE]
        _pwrite_all(fd, piece, offset + start)
        if SYNC_FILE_RANGE is not None:
            # Advisory, so its result is not checked: a refusal only loses the early start, and
            # the fsync that follows reports any real write error.
            SYNC_FILE_RANGE(fd, offset + start, len(piece), SYNC_FILE_RANGE_WRITE)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _spliced_digest(fd: int, size: int, placed: list) -> str:
    """xxh3-128 of the whole file: data regions hashed from memory, the rest read back."""
    hasher, pos = xxhash.xxh3_128(), 0
    for offset, raw in placed:
        if offset > pos:
            hasher.update(os.pread(fd, offset - pos, pos))
        _update(hasher, raw)
        pos = offset + raw.nbytes
    if size > pos:
        hasher.update(os.pread(fd, size - pos, pos))
    return hasher.hexdigest()


def _update(hasher: Any, data: np.ndarray) -> None:
    """Hash in slices: xxhash holds the GIL, so a slice at a time lets the caller's thread run."""
    for start in range(0, data.nbytes, HASH_SLICE):
        hasher.update(data[start:start + HASH_SLICE])


def write_global_file(path: Path, layouts: list, rank_files: list, attrs: dict,
                      sync_dir: bool = True) -> tuple[int, str]:
    """Write the virtual-dataset file giving each sharded key its global shape; sources are the
    rank files by relative name (``rank_files[r]``), replicas of a shard mapped once."""
    with atomic_path(path, sync_dir=sync_dir) as tmp:
        with h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
            f.attrs.update(attrs)
            f.attrs["rank_files"] = list(rank_files)
            for entry in layouts[0]:
                if entry.global_shape is not None:
                    _virtual_dataset(f, entry, layouts, rank_files)
    return file_digest(path)


def _virtual_dataset(f: h5py.File, first, layouts: list, rank_files: list) -> None:
    vlayout = h5py.VirtualLayout(shape=first.global_shape, dtype=first.dtype)
    mapped = set()
    for rank, entries in enumerate(layouts):
        entry = next(e for e in entries if e.key == first.key)
        box = (entry.offset, entry.shape)
        if 0 in entry.shape or box in mapped:
            continue
        mapped.add(box)
        target = tuple(slice(o, o + n) for o, n in zip(entry.offset, entry.shape))
        vlayout[target] = h5py.VirtualSource(rank_files[rank], entry.key, shape=entry.shape)
    if mapped:
        dset = f.create_virtual_dataset(first.key, vlayout)
    else:
        dset = f.create_dataset(first.key, shape=first.global_shape, dtype=first.dtype)
    dset.attrs["global_shape"] = np.asarray(first.global_shape, dtype=np.int64)


def file_digest(path: Path) -> tuple[int, str]:
    """Size and xxh3-128 hex digest of a regular file (never a FIFO or a device: ``safety.Refused``), streamed."""
    hasher, size = xxhash.xxh3_128(), 0
    with open_regular(path) as fd:
        buf = bytearray(min(READ_CHUNK, os.fstat(fd).st_size) or 1)
        while n := os.readv(fd, [buf]):
            hasher.update(memoryview(buf)[:n])
            size += n
    return size, hasher.hexdigest()


def read_verified(path: Path, size: int, digest: str) -> np.ndarray:
    """The bytes of the regular file ``path`` if its size and checksum match; raises ValueError
    naming what differs (``safety.Refused``, a ValueError, for what is not a regular file)."""
    try:
        with open_regular(path) as fd:
            actual = os.fstat(fd).st_size
            if actual != size:
                raise ValueError(f"{path}: size {actual} bytes, manifest says {size}")
            data = _read_whole(fd, actual)
    except Refused as exc:
        raise ValueError(f"{path} {exc}") from None
    if len(data) != size:
        raise ValueError(f"{path}: {len(data)} bytes read, manifest says {size} (shrank while read)")
    hasher = xxhash.xxh3_128()
    _update(hasher, data)
    if (got := hasher.hexdigest()) != digest:
        raise ValueError(f"{path}: checksum {got} does not match the manifest's {digest}")
    return data


class _ImageReader(io.RawIOBase):
    """A read-only file over a byte array, without copying it (``io.BytesIO`` would)."""

    def __init__(self, data: np.ndarray):
        self._data = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence] + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._pos = position
        return position

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        chunk = self._data[self._pos:self._pos + len(target)]
        target[:len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def _read_whole(fd: int, size: int) -> np.ndarray:
    """The first ``size`` bytes of the file open as ``fd`` (fewer if it is shorter). A small first
    read starts the kernel's readahead, which then streams the file ahead of one large read; a
    single large read from a cold file ran at half the speed here (24 against 12 ms for 16 MiB,
    as ``np.load``)."""
    data = np.empty(size, dtype=np.uint8)
    view, done = memoryview(data), 0
    while done < size and (n := os.readv(fd, [view[done:done + (PROBE_READ if done == 0 else size)]])):
        done += n
    return data[:done]


def open_image(data: np.ndarray) -> h5py.File:
    """Open a verified file image held in memory (never re-reading the disk, never copying it)."""
    return h5py.File(_ImageReader(data), "r")


def packed_base(f: h5py.File) -> Optional[int]:
    """The file offset of the packed dataset's bytes, or None when the file packs nothing."""
    if PACKED_KEY not in f:
        return None
    offset = f[PACKED_KEY].id.get_offset()
    return 0 if offset is None else offset


def check_rank_file(f: h5py.File, entries: list, step: int, world_size: int, rank: int) -> None:
    """Raise ValueError naming the first thing in which the rank file ``f`` (verified by its
    checksum) contradicts its manifest: the step, world size or rank it was written for, the set
    of arrays, or an array's dtype, shape, global shape, offset or packed place."""
    for name, want in (("step", step), ("world_size", world_size), ("rank", rank)):
        got = f.attrs.get(name)
        if not isinstance(got, (int, np.integer)) or int(got) != want:
            raise ValueError(f"the file is of {name} {got}, the manifest says {want}")
    if not isinstance(json.loads(f.attrs[JSON_ATTR]), dict):
        raise ValueError("the file's JSON values are not an object")
    has_pack = PACKED_KEY in f
    packed = {e.key: e for e in entries if has_pack and e.packed}
    if has_pack:
        pack = f[PACKED_KEY]
        rows = json.loads(pack.attrs[INDEX_ATTR])
        index = {row[0]: row for row in rows if isinstance(row, list) and len(row) == 4}
        if len(index) != len(rows) or set(index) != set(packed):
            raise ValueError(f"the file packs {sorted(index)[:5]}…, the manifest says {sorted(packed)[:5]}…")
        for key, entry in packed.items():
            if index[key][1:] != [entry.dtype, list(entry.shape), entry.buf_offset] or \
                    entry.buf_offset + entry.nbytes > pack.shape[0] or entry.buf_offset % ALIGNMENT:
                raise ValueError(f"array {key!r}: the file packs dtype, shape, offset {index[key][1:]}, the manifest "
                                 f"says {[entry.dtype, list(entry.shape), entry.buf_offset]}")
    names: list = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    want = {e.key for e in entries if e.key not in packed} | ({PACKED_KEY} if has_pack else set())
    if set(names) != want:
        extra, missing = sorted(set(names) - want), sorted(want - set(names))
        raise ValueError(f"the file has arrays {extra[:5]} the manifest does not list, and lacks {missing[:5]}")
    for entry in entries:
        if entry.key in packed:
            continue
        dset = f[entry.key]
        got = (dset.dtype.str, dset.shape, _attr_tuple(dset, "global_shape"), _attr_tuple(dset, "offset"))
        if got != (entry.dtype, entry.shape, entry.global_shape, entry.offset):
            raise ValueError(f"array {entry.key!r}: the file has dtype, shape, global shape, offset {got}, the "
                             f"manifest says {(entry.dtype, entry.shape, entry.global_shape, entry.offset)}")


def _attr_tuple(dset: h5py.Dataset, name: str) -> Optional[tuple]:
    value = dset.attrs.get(name)
    return None if value is None else tuple(int(n) for n in np.asarray(value).reshape(-1))


def dataset_view(f: h5py.File, image: np.ndarray, key: str) -> Optional[np.ndarray]:
    """Dataset ``key`` of the file ``f`` opened on ``image``, as an array viewing the image's bytes
    (contiguous, allocated datasets: all that :func:`write_rank_file` makes; None for others, which
    HDF5 must read). Files from before ``ALIGNMENT`` may give misaligned views: fine to copy from."""
    dset = f[key]
    offset = dset.id.get_offset()
    if offset is None or dset.chunks is not None or dset.compression is not None:
        return None
    return image[offset:offset + dset.size * dset.dtype.itemsize].view(dset.dtype).reshape(dset.shape)
