"""Assembling a rank's restored state out of verified file images: whole datasets as views or
copies, resharded boxes copied out of every saved shard that overlaps them."""

from __future__ import annotations

import collections
import json
import math
from typing import Any, Optional

import numpy as np

from hpcrt.checkpoint.format.entries import Shard
from hpcrt.checkpoint.format.hdf5 import JSON_ATTR, dataset_view, open_image, packed_base
from hpcrt.checkpoint.restore.plan import all_owners, intersection

VIEW_SHARE = 0.5
"""Whole datasets come back as views of their file image only when this rank takes at least this
share of the image's bytes as such; below it they are copied, so that the image can be freed."""


def assemble(layouts: list, plan: dict, source: int, images: dict, owners: Optional[dict] = None) -> dict:
    """This rank's flat state: JSON values and plain arrays of old rank ``source``, shards sliced
    out of every old file that overlaps the planned boxes. A whole dataset (or packed array) comes
    back as a view of its verified image when this rank takes at least ``VIEW_SHARE`` of that
    image's bytes so (a small array must not keep a large image alive), else as a copy; other
    boxes are assembled, and must be covered whole by the saved shards."""
    owners = all_owners(layouts) if owners is None else owners
    files = {old: open_image(data) for old, data in images.items()}
    try:
        packs = {old: packed_base(f) for old, f in files.items()}
        flat: dict = json.loads(files[source].attrs[JSON_ATTR])
        whole, boxes = {}, []
        for entry in layouts[source]:
            if entry.global_shape is None:
                whole[entry.key] = (source, entry)
                continue
            box = plan[entry.key]
            exact = [(old, owned) for old, owned in owners[entry.key] if (owned.offset, owned.shape) == box]
            if exact:
                whole[entry.key] = exact[0]
            else:
                boxes.append(entry)
        taken: dict = collections.Counter()
        for old, owned in whole.values():
            taken[old] += owned.nbytes
        for entry in layouts[source]:
            if entry.key in whole:
                old, owned = whole[entry.key]
                as_view = taken[old] >= VIEW_SHARE * images[old].nbytes
                if packs[old] is not None and owned.packed:
                    start = packs[old] + owned.buf_offset
                    array = images[old][start:start + owned.nbytes].view(owned.dtype).reshape(owned.shape)
                    array = array if as_view and array.flags.aligned else array.copy()
                else:
                    array = _read(files[old], images[old], owned, as_view)
                flat[entry.key] = array if entry.global_shape is None else \
                    Shard(array, entry.global_shape, plan[entry.key][0])
        for entry in boxes:
            offset, shape = plan[entry.key]
            out = np.empty(shape, dtype=entry.dtype)
            covered = 0
            for old, owned in owners[entry.key]:
                box = intersection(offset, shape, owned.offset, owned.shape)
                if box is not None:
                    lo, hi = box
                    covered += math.prod(b - a for a, b in zip(lo, hi))
                    source_box = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, owned.offset))
                    target_box = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, offset))
                    part = dataset_view(files[old], images[old], entry.key)
                    if part is not None:
                        out[target_box] = part[source_box]
                    else:
                        files[old][entry.key].read_direct(out, source_box, target_box)
            if covered != out.size:
                raise ValueError(f"key {entry.key!r}: the saved shards cover {covered} of the {out.size} elements "
                                 f"asked for at offset {offset}")
            flat[entry.key] = Shard(out, entry.global_shape, offset)
        return flat
    finally:
        for f in files.values():
            f.close()


def _read(f: Any, image: np.ndarray, entry: Any, as_view: bool) -> np.ndarray:
    """A whole dataset: a view of the image (``as_view``, and aligned), a copy of it, or read by HDF5."""
    view = dataset_view(f, image, entry.key)
    if view is not None:
        return view if as_view and view.flags.aligned else view.copy()
    out = np.empty(entry.shape, dtype=entry.dtype)
    if out.size:
        f[entry.key].read_direct(out)
    return out
