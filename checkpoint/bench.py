"""Checkpoint benchmark, measured side by side in one run:

- ``save_blocking``: how long ``save()`` blocks, against the state size;
- ``snapshot``: the host snapshot's bandwidth against a plain ``np.copyto`` of the same bytes;
- ``flush``: each disk level's throughput (write, fsync, rename, checksum, vote, manifest) against
  ``np.save`` + fsync of the same bytes to the same directory;
- ``restore``: a step read back (whole files, checksums verified) against ``np.load`` of the
  same bytes, both from a cold page cache;
- ``loop``: blocking time per step of a training-like loop that checkpoints every step —
  asynchronously, with a synchronous h5py save, and not at all.

``run_checkpoint_benchmark(...)`` returns the rows (for the bench job); ``python -m
hpcrt.checkpoint.bench`` prints them (add ``--json FILE`` to keep them). Runs on any number of
ranks (rank 0 reports its own timings)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import h5py
import numpy as np

import hpcrt
from hpcrt.backends.staging import PinnedPool
from hpcrt.costmodel.timing import timed

from hpcrt.checkpoint.format.entries import flatten
from hpcrt.checkpoint.save.checkpointer import Checkpointer
from hpcrt.checkpoint.save.snapshot import take_snapshot

MB = 1 << 20


def _state(nbytes: int) -> dict:
    return {"params": np.random.default_rng(0).random(nbytes // 8), "step_count": 0}


def bench_save_blocking(ck: Checkpointer, nbytes: int, repeats: int) -> dict:
    state = _state(nbytes)
    times = []
    for i in range(repeats):
        times.append(timed(lambda: ck.save(i, state), 1))
        ck.wait()
    return {"bench": "save_blocking", "bytes": nbytes, "median_ms": 1e3 * statistics.median(times),
            "max_ms": 1e3 * max(times)}


def bench_snapshot(nbytes: int, repeats: int) -> dict:
    """Snapshot and ``np.copyto`` of the same bytes, alternated so that both see the same machine."""
    state = _state(nbytes)
    flat, pool = flatten(state), PinnedPool(sys.maxsize)
    dst = np.empty_like(state["params"])
    take_snapshot(0, flat, pool).release()  # first touch of both destinations
    np.copyto(dst, state["params"])
    snap_s, copy_s = [], []
    for _ in range(repeats):
        snap_s.append(timed(lambda: take_snapshot(0, flat, pool).release(), 1))
        copy_s.append(timed(lambda: np.copyto(dst, state["params"]), 1))
    snap, copy = statistics.median(snap_s), statistics.median(copy_s)
    return {"bench": "snapshot", "bytes": nbytes, "gbps": nbytes / snap / 1e9, "memcpy_gbps": nbytes / copy / 1e9,
            "ratio": _paired_ratio(copy_s, snap_s)}


def bench_flush(directory: Path, local_dir: Path, level: str, nbytes: int, repeats: int, comm: Any) -> dict:
    """Per save, ``commit``: from the snapshot being done to ``level`` committed (write, fsync,
    rename, checksum, vote, manifest, retention's rename of the previous step to the trash);
    ``write``: the rank's file alone (write, checksum, fsync, rename, directory fsync; rank 0's
    ``global.h5`` too at the global level); both alternated with ``np.save`` + fsync of the same
    bytes into the same directory by every rank, done when the last rank is (a commit is
    collective too). The unlink of the previous file runs untimed on both sides (the
    reaper's, off the commit path; the baseline's, before it), and ``os.sync()`` before each side
    leaves neither a journal commit of the other's deletions (on ext4 mounted with ``discard``,
    freed blocks are discarded at the next commit: whoever fsyncs next). ``fixed_ms``: the commit
    protocol's cost beyond the write (vote, manifest, retention), per save."""
    state = _state(nbytes)
    flush_s, write_s, base_s = [], [], []
    marks: dict = {}
    with Checkpointer(directory / f"flush-{level}-{nbytes}", levels=(level,), comm=comm, local_dir=local_dir,
                      keep=1) as ck:
        ck._on_phase = lambda name: marks.__setitem__(name, time.perf_counter())
        target = ck.places.directory if level == "global" else ck.places.node_root(ck.node)
        target.mkdir(parents=True, exist_ok=True)
        baseline = target / f"baseline-{comm.rank}.npy"

        def np_save_fsync() -> None:  # done, like a checkpoint of the job, when every rank is
            _np_save_fsync(baseline, state["params"])
            comm.Barrier()

        for i in range(repeats):
            os.sync()  # each side starts from a quiet disk: no journal commit of the other's left to it
            comm.Barrier()
            ck.save(i, state)
            ck.wait_snapshot()
            flush_s.append(timed(ck.wait, 1))
            write_s.append(marks[f"{level}:vote"] - marks[f"{level}:write"])
            ck._reaper.drain()  # the retired step's unlink, like the baseline's, is not timed
            baseline.unlink(missing_ok=True)
            os.sync()
            comm.Barrier()
            base_s.append(timed(np_save_fsync, 1))
        baseline.unlink()
    flush, write, base = (statistics.median(t) for t in (flush_s, write_s, base_s))
    fixed = statistics.median(f - w for f, w in zip(flush_s, write_s))
    return {"bench": "flush", "level": level, "bytes": nbytes, "commit_gbps": nbytes / flush / 1e9,
            "write_gbps": nbytes / write / 1e9, "np_save_fsync_gbps": nbytes / base / 1e9,
            "commit_ratio": _paired_ratio(base_s, flush_s), "write_ratio": _paired_ratio(base_s, write_s),
            "fixed_ms": 1e3 * fixed}


def _np_save_fsync(path: Path, array: np.ndarray) -> None:
    """The baseline write: ``np.save`` into a new file, then fsync."""
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


def _evict(*roots: Path) -> None:
    """Drop the clean cached pages of every file under ``roots``, so that the next read of them
    comes from the disk (``POSIX_FADV_DONTNEED``: no privileges needed, fsynced pages are clean)."""
    for path in (p for root in roots for p in root.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def bench_restore(directory: Path, local_dir: Path, level: str, nbytes: int, repeats: int, comm: Any) -> dict:
    """``restore()`` of a step committed at ``level`` alone (the marker and manifests read, every
    file read whole, its size and xxh3-128 checked, the HDF5 image opened in memory, the arrays
    taken from it; the restored arrays are compared with the saved ones) against ``np.load`` of
    the same bytes from the same directory, each done when the last rank is. Both start from a
    cold page cache for their files (``POSIX_FADV_DONTNEED``, which a tmpfs ignores)."""
    state = _state(nbytes)
    restore_s, base_s = [], []
    with Checkpointer(directory / f"restore-{level}-{nbytes}", levels=(level,), comm=comm, local_dir=local_dir,
                      keep=1) as ck:
        ck.save(0, state)
        ck.wait()
        root = ck.places.directory if level == "global" else ck.places.node_root(ck.node)
        cold = {root, ck.places.directory}  # the level's files, and the manifests
        baseline = root / f"baseline-{comm.rank}.npy"
        _np_save_fsync(baseline, state["params"])
        for _ in range(repeats):
            _evict(*cold)
            comm.Barrier()
            start = time.perf_counter()
            _, restored = ck.restore()
            comm.Barrier()
            restore_s.append(time.perf_counter() - start)
            if not np.array_equal(restored["params"], state["params"]):
                raise RuntimeError(f"restore benchmark: rank {comm.rank} restored other data than it saved")
            _evict(*cold)
            comm.Barrier()
            start = time.perf_counter()
            np.load(baseline)
            comm.Barrier()
            base_s.append(time.perf_counter() - start)
        baseline.unlink()
    return {"bench": "restore", "level": level, "bytes": nbytes,
            "restore_gbps": nbytes / statistics.median(restore_s) / 1e9,
            "np_load_gbps": nbytes / statistics.median(base_s) / 1e9, "ratio": _paired_ratio(base_s, restore_s)}


def _paired_ratio(baseline: list, measured: list) -> float:
    """Median over saves of baseline time / measured time, each pair taken back to back: a load
    that comes and goes during the run moves both sides of a pair alike."""
    return statistics.median(b / m for b, m in zip(baseline, measured))


def _compute(work: tuple, rounds: int) -> None:
    a, b = work
    for _ in range(rounds):
        np.matmul(a, b, out=a)
        a /= np.abs(a).max()


def bench_loop(directory: Path, local_dir: Path, nbytes: int, steps: int, rounds: int, comm: Any) -> list:
    """A training-like loop checkpointing every step, placed as DataStates-LLM places it: save the
    state the last update produced, run forward and backward (matmuls that only read it), then
    ``wait_snapshot()`` and update the state in place. Blocking = save() + wait_snapshot().
    ``async_no_overlap`` waits for the snapshot right after ``save()``: the copy's full cost."""
    rng = np.random.default_rng(1)
    work = (rng.random((512, 512)), rng.random((512, 512)))
    rows = []
    for mode in ("none", "async", "async_no_overlap", "sync_h5py"):
        state = _state(nbytes)
        blocking, step_times = [], []
        ck = Checkpointer(directory / f"loop-{nbytes}", levels=("memory", "local"), comm=comm,
                          local_dir=local_dir, keep=1) if mode.startswith("async") else None
        for step in range(steps):
            start = time.perf_counter()
            if ck is not None:
                ck.save(step, state)
                if mode == "async_no_overlap":  # the copy cannot overlap the compute
                    ck.wait_snapshot()
            elif mode == "sync_h5py":
                _h5py_save(directory / f"sync-{nbytes}-rank{comm.rank}.h5", state)
            blocked = time.perf_counter() - start
            _compute(work, rounds)  # forward and backward: they read the state, never write it
            before = time.perf_counter()
            if ck is not None:
                ck.wait_snapshot()  # right before the update mutates the state
            blocking.append(blocked + time.perf_counter() - before)
            state["params"] += 1.0
            state["step_count"] = step
            step_times.append(time.perf_counter() - start)
        if ck is not None:
            ck.wait()
            ck.close()
        rows.append({"bench": "loop", "mode": mode, "bytes": nbytes, "steps": steps,
                     "blocking_ms_median": 1e3 * statistics.median(blocking[1:]),
                     "step_ms_median": 1e3 * statistics.median(step_times[1:])})
    sync = next(r for r in rows if r["mode"] == "sync_h5py")["blocking_ms_median"]
    for row in rows:
        row["blocking_vs_sync"] = row["blocking_ms_median"] / sync
    return rows


def _h5py_save(path: Path, state: dict) -> None:
    """The synchronous baseline: one h5py file, fsynced, written in place of the last one."""
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("params", data=state["params"])
        f.attrs["step_count"] = state["step_count"]
    fd = os.open(tmp, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.replace(tmp, path)


def run_checkpoint_benchmark(sizes_mb: Sequence[int] = (1, 16, 64, 256), *, directory: Optional[str] = None,
                             local_dir: Optional[str] = None, repeats: int = 15, loop_mb: int = 16,
                             loop_steps: int = 16, loop_rounds: int = 16, comm: Any = None) -> list:
    """Every measurement above for each state size; returns one dict per row (rank 0's timings).
    ``directory`` is the global level (default: a temporary directory), ``local_dir`` the
    node-local one (default: the checkpointer's)."""
    comm = comm if comm is not None else hpcrt.init({"log_files": False}).comm
    scratch = None
    if not directory:
        scratch = comm.bcast(tempfile.mkdtemp(prefix="hpcrt-ckpt-bench-") if comm.rank == 0 else None)
    base = Path(directory or scratch)
    local = Path(local_dir) if local_dir else None
    rows = []
    levels = ["local", "global"] + (["partner"] if len(set(comm.allgather(hpcrt.get_runtime().node))) > 1 else [])
    with Checkpointer(base / "blocking", levels=("memory", "local"), comm=comm, local_dir=local, keep=1) as ck:
        for mb in sizes_mb:
            rows.append(bench_save_blocking(ck, mb * MB, repeats))
    for mb in sizes_mb:
        rows.append(bench_snapshot(mb * MB, repeats))
        rows.extend(bench_flush(base, local or base / "local", level, mb * MB, repeats, comm) for level in levels)
        rows.extend(bench_restore(base, local or base / "local", level, mb * MB, repeats, comm) for level in levels)
    rows.extend(bench_loop(base, local or base / "local", loop_mb * MB, loop_steps, loop_rounds, comm))
    comm.Barrier()
    if scratch and comm.rank == 0:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def format_rows(rows: list) -> str:
    """A plain-text table per benchmark."""
    lines = []
    for bench in dict.fromkeys(r["bench"] for r in rows):
        subset = [r for r in rows if r["bench"] == bench]
        keys = list(subset[0])
        lines.append(f"== {bench}")
        lines.append("  ".join(f"{k:>18}" for k in keys[1:]))
        for r in subset:
            lines.append("  ".join(f"{r[k]:>18.3f}" if isinstance(r[k], float) else f"{r[k]!s:>18}"
                                   for k in keys[1:]))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcrt.checkpoint.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--dir", help="global level directory (default: a temporary directory)")
    parser.add_argument("--local-dir", help="node-local directory (default: $SLURM_TMPDIR or the system tmp)")
    parser.add_argument("--repeats", type=int, default=15,
                        help="saves per size and level (a single pair's ratio swings 0.2-7x with the disk)")
    parser.add_argument("--loop-mb", type=int, default=16)
    parser.add_argument("--loop-steps", type=int, default=16)
    parser.add_argument("--loop-rounds", type=int, default=16, help="matmuls per loop step (the step's compute)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = run_checkpoint_benchmark(args.sizes_mb, directory=args.dir, local_dir=args.local_dir,
                                    repeats=args.repeats, loop_mb=args.loop_mb, loop_steps=args.loop_steps,
                                    loop_rounds=args.loop_rounds)
    if hpcrt.get_runtime().rank == 0:
        print(format_rows(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
