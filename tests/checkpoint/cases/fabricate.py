"""A checkpoint directory written without MPI, as a job of ``size`` ranks would leave it (global
level only), so that serial tests can damage it and watch readers cope."""

import sys

import numpy as np

from hpcrt.backends.staging import PinnedPool
from hpcrt.checkpoint import Shard
from hpcrt.checkpoint.files.commit import write_json_atomic
from hpcrt.checkpoint.files.levels import Places, rank_name, step_name
from hpcrt.checkpoint.format import manifest
from hpcrt.checkpoint.format.entries import flatten
from hpcrt.checkpoint.format.hdf5 import file_attrs, write_global_file, write_rank_file
from hpcrt.checkpoint.save.snapshot import take_snapshot

ROWS = 15


def state(step, rank, size):
    """An uneven split of a global array (8 and 7 rows for 2 ranks), a small per-rank array, JSON."""
    rows = np.array_split(np.arange(ROWS), size)[rank]
    g = np.arange(ROWS * 3, dtype=np.float64).reshape(ROWS, 3) + 1000 * step
    return {"w": Shard(g[rows[0]:rows[-1] + 1], g.shape, (int(rows[0]), 0)),
            "b": np.full(3, 10 * step + rank, dtype=np.int32), "meta": {"step": step, "rank": rank}}


def fabricate(directory, local=None, steps=(1, 2), size=2):
    """Write committed ``steps`` at the global level; returns the :class:`Places`."""
    places = Places.of(directory, local if local is not None else directory.parent / "local")
    manifest.create_directory(places)
    pool = PinnedPool(sys.maxsize)
    for step in steps:
        layouts, files = [], []
        for rank in range(size):
            snap = take_snapshot(step, flatten(state(step, rank, size)), pool)
            relative = Places.relative("global", step, rank)
            nbytes, digest = write_rank_file(places.resolve("global", None, relative), snap,
                                             file_attrs(step, size, level="global", rank=rank))
            layouts.append(snap.entries)
            files.append({"rank": rank, "node": None, "path": relative, "size": nbytes, "xxh3_128": digest})
            snap.release()
        path = places.step_dir(step) / "global.h5"
        nbytes, digest = write_global_file(path, layouts, [rank_name(r) for r in range(size)],
                                           file_attrs(step, size, level="global"))
        files.append({"rank": None, "node": None, "path": f"{step_name(step)}/global.h5", "size": nbytes,
                      "xxh3_128": digest})
        write_json_atomic(places.manifest_path(step, "global"),
                          manifest.build(step, "global", [f"n{r}" for r in range(size)], layouts, files))
    return places
