"""Many small arrays against one array of the same bytes: how long ``save()`` blocks, how long the
save takes to commit (``wait()``), how long a fresh ``restore()`` takes, and how large the rank
file and the manifest grow.

    python -m hpcrt.checkpoint.bench_small [--arrays 10000] [--bytes 64] [--repeats 5] [--json FILE]

Public API only (so the same script measures any version); rank 0 reports. Three states of the
same bytes, saved to the local and global levels: ``small_flat`` ``{"a00000": <8 float64>, ...}``,
``small_nested`` ``{"layer00000": {"bias": <8 float64>}, ...}`` (a group per layer in HDF5 unless
packed) and ``one_array`` ``{"flat": <all of it>}``."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import hpcrt
from hpcrt.checkpoint import Checkpointer


def measure(directory: Path, state: dict, repeats: int, comm) -> dict:
    """Medians over ``repeats`` saves of one state, then one fresh restore of the last."""
    local = directory.parent / (directory.name + "-local")
    blocked, committed = [], []
    with Checkpointer(directory, comm=comm, local_dir=local, levels=("local", "global"), keep=1) as ck:
        for step in range(repeats):
            comm.Barrier()
            start = time.perf_counter()
            ck.save(step, state)
            saved = time.perf_counter()
            ck.wait()
            blocked.append(saved - start)
            committed.append(time.perf_counter() - saved)
    with Checkpointer(directory, comm=comm, local_dir=local, levels=("local", "global")) as ck:
        comm.Barrier()
        start = time.perf_counter()
        ck.restore()
        comm.Barrier()
        restore_s = time.perf_counter() - start
    step_dir = directory / f"step-{repeats - 1:09d}"
    rank_file = next(p for p in step_dir.iterdir() if p.name.startswith("rank-00000"))
    return {"save_ms": 1e3 * statistics.median(blocked), "commit_ms": 1e3 * statistics.median(committed),
            "restore_ms": 1e3 * restore_s, "rank_file_bytes": rank_file.stat().st_size,
            "manifest_bytes": (step_dir / "manifest-global.json").stat().st_size}


def run(arrays: int, nbytes: int, repeats: int, comm) -> list:
    scratch = Path(comm.bcast(tempfile.mkdtemp(prefix="hpcrt-bench-small-") if comm.rank == 0 else None))
    count = nbytes // 8
    states = {"small_flat": {f"a{i:05d}": np.full(count, i, dtype=np.float64) for i in range(arrays)},
              "small_nested": {f"layer{i:05d}": {"bias": np.full(count, i, dtype=np.float64)} for i in range(arrays)},
              "one_array": {"flat": np.arange(arrays * count, dtype=np.float64)}}
    rows = []
    try:
        for name, state in states.items():
            rows.append({"state": name, "arrays": 1 if name == "one_array" else arrays,
                         "state_bytes": arrays * count * 8, **measure(scratch / name, state, repeats, comm)})
    finally:
        comm.Barrier()
        if comm.rank == 0:
            shutil.rmtree(scratch, ignore_errors=True)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcrt.checkpoint.bench_small", description=__doc__.split("\n")[0])
    parser.add_argument("--arrays", type=int, default=10_000)
    parser.add_argument("--bytes", type=int, default=64, help="bytes per array (a multiple of 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    comm = hpcrt.init({"log_files": False}).comm
    rows = run(args.arrays, args.bytes, args.repeats, comm)
    if comm.rank == 0:
        for row in rows:
            print("  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
