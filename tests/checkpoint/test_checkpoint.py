"""The checkpointer inside one MPI job: round trips through every level, the lazy snapshot,
fallback on corrupt or lost copies, retention, resharding by request, and bad input."""

import json
import os
import re
import resource
import signal
from pathlib import Path

import numpy as np
import pytest

import hpcrt
from hpcrt.checkpoint import (Checkpointer, CheckpointError, CheckpointNotFoundError, FormatVersionError,
                              NotACheckpointDirectoryError, Shard, StateError)

from conftest import SAMPLE_TOPOLOGY


def runtime(topology=False):
    return hpcrt.init({"log_files": False, **({"topology_file": str(SAMPLE_TOPOLOGY)} if topology else {})})


def make_state(step, rank, size):
    """Shards of two global arrays (one on the fake GPU), per-rank arrays of several dtypes,
    an RNG state and nested JSON values."""
    g = np.random.default_rng(step).standard_normal((7 * size + 1, 3)).astype(np.float32)
    rows = np.array_split(np.arange(g.shape[0]), size)[rank]
    return {"params": {"w": Shard(g[rows[0]:rows[-1] + 1], g.shape, (int(rows[0]), 0)),
                       "gpu": Shard(hpcrt.to_fake_gpu(g[rows[0]:rows[-1] + 1] * 2), g.shape, (int(rows[0]), 0))},
            "opt": {"count": np.array(step * 10 + rank, dtype=np.int64),
                    "mask": np.arange(5) % (rank + 2) == 0,
                    "z": np.full((2, 2), step + 1j * rank, dtype=np.complex128)},
            "rng": np.random.default_rng([step, rank]).bit_generator.state,
            "meta": {"step": step, "lr": 0.5 / (step + 1), "tags": ["a", rank], "empty": {}}}


def assert_same(got, want):
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, dict):
            assert_same(got[key], value)
        elif isinstance(value, Shard):
            array = value.array.get() if hasattr(value.array, "get") else value.array
            assert isinstance(got[key], Shard) and got[key].offset == value.offset
            assert got[key].global_shape == value.global_shape
            assert got[key].array.dtype == array.dtype and np.array_equal(got[key].array, array), key
        elif isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key
        else:
            assert got[key] == json.loads(json.dumps(value)), key


def test_new_folders_are_made_durable_in_their_parents(tmp_path, monkeypatch):
    from hpcrt.checkpoint.files import commit
    synced = []
    monkeypatch.setattr(commit, "fsync_dir", synced.append)
    (tmp_path / "a").mkdir()
    commit.make_dirs_durable(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert synced == [tmp_path / "a", tmp_path / "a" / "b"]  # the parents of the two folders created
    commit.make_dirs_durable(tmp_path / "a" / "b")
    assert len(synced) == 2


def test_ledger_retains_what_is_committed_on_disk(tmp_path):
    from hpcrt.checkpoint.files.commit import write_json_atomic
    from hpcrt.checkpoint.files.levels import Places
    from hpcrt.checkpoint.files.retention import Ledger
    from hpcrt.checkpoint.format import manifest
    places = Places.of(tmp_path / "ckpt", tmp_path / "local")
    manifest.create_directory(places)

    def commit(ledger, step):
        ledger.add(step, "local")
        write_json_atomic(places.manifest_path(step, "local"), manifest.build(step, "local", ["n"], [[]], [
            {"rank": 0, "node": "n", "path": f"local/step-{step:09d}/rank-00000.h5", "size": 1,
             "xxh3_128": "0" * 32}], save="ab12"))

    def on_disk():
        return sorted(manifest.committed(places))

    first = Ledger(places)
    commit(first, 1)
    commit(first, 2)
    ledger = Ledger(places)  # reopened: finds steps 1 and 2
    ledger.add(3, "local")
    ledger.discard(3, "local")  # a commit that failed must not count against keep
    commit(ledger, 4)
    dropped = ledger.retire("local", 2)
    assert on_disk() == [2, 4] and [r["path"] for r in dropped] == ["local/step-000000001/rank-00000.h5"]
    assert ledger.is_committed(4) and not ledger.is_committed(1) and not ledger.is_committed(3)


def test_restore_views_images_it_mostly_uses_and_copies_from_others(tmp_path):
    import sys
    from hpcrt.backends.staging import PinnedPool
    from hpcrt.checkpoint.format.entries import flatten
    from hpcrt.checkpoint.format.hdf5 import ALIGNMENT, file_attrs, open_image, read_verified, write_rank_file
    from hpcrt.checkpoint.restore.assemble import assemble as _assemble
    from hpcrt.checkpoint.save.snapshot import take_snapshot
    images, layouts, N = {}, [], 100_000
    for rank in range(2):  # two saved ranks: a shard of a global array, and small per-rank arrays
        state = {"big": Shard(np.arange(N) + N * rank, (2 * N,), (N * rank,)),
                 "flag": np.array([True, False, rank == 1]), "small": np.array([rank], dtype=np.int16)}
        snap = take_snapshot(0, flatten(state), PinnedPool(sys.maxsize))
        path = tmp_path / f"rank-{rank}.h5"
        size, digest = write_rank_file(path, snap, file_attrs(0, 2, rank=rank))
        images[rank], layouts = read_verified(path, size, digest), layouts + [snap.entries]
        with open_image(images[rank]) as f:  # every dataset aligned, whatever came before it; small arrays packed
            assert all(f[k].id.get_offset() % ALIGNMENT == 0 for k in ("big", "_hpcrt_packed"))
            assert set(f) == {"big", "_hpcrt_packed"} and f.attrs["format_version"] == 2
    same = _assemble(layouts, {"big": ((N,), (N,))}, 1, images)  # the saved layout: views
    assert np.array_equal(same["big"].array, np.arange(N) + N) and same["small"][0] == 1
    assert all(np.shares_memory(a, images[1]) for a in (same["big"].array, same["flag"], same["small"]))
    one = _assemble(layouts, {"big": ((0,), (2 * N,))}, 0, images)  # resharded onto one rank
    assert np.array_equal(one["big"].array, np.arange(2 * N)) and list(one["flag"]) == [True, False, False]
    assert not any(np.shares_memory(a, images[0]) for a in (one["big"].array, one["flag"], one["small"]))


def test_snapshot_copies_every_kind_of_array_to_its_place():
    import sys
    from hpcrt.backends.staging import PinnedPool
    from hpcrt.checkpoint.format.entries import flatten
    from hpcrt.checkpoint.save.snapshot import GIL_FREE_COPY_BYTES, take_snapshot
    rng = np.random.default_rng(3)
    state = {"big": rng.random(GIL_FREE_COPY_BYTES // 8 + 3), "small": rng.random((5, 7)).astype(np.float32),
             "strided": rng.random((6, 8))[:, ::3], "scalar": np.array(7, dtype=np.int16),
             "mask": rng.random(9) > 0.5, "swapped": np.arange(4, dtype=">i4"), "gpu": hpcrt.to_fake_gpu(np.ones(3))}
    flat = flatten(state)
    snap = take_snapshot(1, flat, PinnedPool(sys.maxsize))
    for entry in snap.entries:
        want = np.asarray(state[entry.key].get() if entry.key == "gpu" else state[entry.key])
        got = snap.view(entry)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), entry.key
    snap.release()


@pytest.mark.mpi(ranks=[1, 2, 3], timeout=120)
def test_round_trip_memory_and_disk(comm, mpi_tmp_path):
    rt = runtime()
    local = mpi_tmp_path / "local"
    with Checkpointer(mpi_tmp_path / "ckpt", comm=rt.comm, local_dir=local, global_every=2) as ck:
        assert ck.levels == ("memory", "local", "global") and ck.latest() is None
        live = {"x": np.zeros(1000)}
        ck.save(0, live)
        ck.wait_snapshot()
        live["x"][:] = 1  # mutating after wait_snapshot() does not touch the checkpoint
        for step in (1, 2, 3):
            ck.save(step, make_state(step, rt.rank, rt.size))
            ck.wait_snapshot()
        ck.wait()
        listed = {e["step"]: e["levels"] for e in ck.list()}
        assert listed[3] == ["memory", "local"] and listed[2] == ["local", "global"] and 0 in listed
        assert ck.latest() == 3
        step, got = ck.restore()
        assert step == 3 and ck.restored_from == {rt.rank: "memory"}
        assert_same(got, make_state(3, rt.rank, rt.size))
        step, got = ck.restore(0)
        assert step == 0 and not got["x"].any()
    with Checkpointer(mpi_tmp_path / "ckpt", comm=rt.comm, local_dir=local) as fresh:
        step, got = fresh.restore()
        assert step == 3 and set(fresh.restored_from.values()) == {"local"}
        assert_same(got, make_state(3, rt.rank, rt.size))
        step, got = fresh.restore(2)
        assert_same(got, make_state(2, rt.rank, rt.size))
        # any box of a sharded array, on request
        step, got = fresh.restore(3, shards={"params/w": ((1, 1), (rt.size * 3, 2))})
        full = np.random.default_rng(3).standard_normal((7 * rt.size + 1, 3)).astype(np.float32)
        assert got["params"]["w"].offset == (1, 1)
        assert np.array_equal(got["params"]["w"].array, full[1:1 + rt.size * 3, 1:3])
        with pytest.raises(CheckpointNotFoundError, match="step 7 has no committed checkpoint"):
            fresh.restore(7)
    hpcrt.finalize()


def flip_byte(path, at=-1):
    """Flip one byte of a rank file's data (``at`` from the end, inside the last dataset)."""
    with open(path, "r+b") as f:
        f.seek(at, 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.mpi(ranks=[4], timeout=120)
def test_partner_global_and_older_step_fallbacks(comm, mpi_tmp_path):
    rt = runtime(topology=True)
    directory, local = mpi_tmp_path / "ckpt", mpi_tmp_path / "local"
    with Checkpointer(directory, comm=rt.comm, local_dir=local, keep=2, global_every=2) as ck:
        assert ck.levels == ("memory", "local", "partner", "global")
        for step in range(1, 6):
            ck.save(step, make_state(step, rt.rank, rt.size))
        ck.wait()
        places = ck.places
    # retention: the last 2 steps per disk level, global every second save (steps 1, 3, 5)
    with Checkpointer(directory, comm=rt.comm, local_dir=local) as fresh:
        assert [e["step"] for e in fresh.list()] == [3, 4, 5]
    node_files = sorted(p.relative_to(places.local_root).as_posix() for p in places.local_root.rglob("*.h5"))
    assert len(node_files) == 16 and all("step-000000004" in p or "step-000000005" in p for p in node_files)
    comm.Barrier()

    def restore_fresh():
        with Checkpointer(directory, comm=rt.comm, local_dir=local) as fresh:
            step, got = fresh.restore()
            return step, got, fresh.restored_from

    local_file = places.node_root("node-ib") / "local" / "step-000000005" / "rank-00001.h5"
    if rt.rank == 0:
        flip_byte(local_file)
    comm.Barrier()
    step, got, sources = restore_fresh()
    assert step == 5 and sources == {0: "local", 1: "partner", 2: "local", 3: "local"}
    assert_same(got, make_state(5, rt.rank, rt.size))
    comm.Barrier()
    if rt.rank == 0:  # a node's whole local directory is lost
        import shutil
        shutil.rmtree(places.node_root("node-roce"))
    comm.Barrier()
    step, got, sources = restore_fresh()
    assert step == 5 and sources == {0: "local", 1: "global", 2: "partner", 3: "partner"}
    assert_same(got, make_state(5, rt.rank, rt.size))
    comm.Barrier()
    if rt.rank == 0:  # rank 1's global copy of step 5 is corrupt too: step 4 (local/partner) it is
        flip_byte(directory / "step-000000005" / "rank-00001.h5")
    comm.Barrier()
    step, got, sources = restore_fresh()
    assert step == 4 and sources == {0: "local", 1: "local", 2: "partner", 3: "partner"}
    assert_same(got, make_state(4, rt.rank, rt.size))
    hpcrt.finalize()


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_bad_state_and_disagreeing_ranks(comm, mpi_tmp_path):
    rt = runtime()
    with Checkpointer(mpi_tmp_path / "ckpt", comm=rt.comm, local_dir=mpi_tmp_path / "l") as ck:
        for bad, match in (([1, 2], "must be a dict"), ({"a": object()}, "key 'a': object is neither"),
                           ({"a/b": 1}, "without '/'"), ({"a": {"b": [np.zeros(2)]}}, "key 'a/b'"),
                           ({"s": Shard(np.zeros(3), (2,), (0,))}, "does not fit"),
                           ({"o": np.array([None])}, "dtype object is not supported")):
            with pytest.raises(StateError, match=match):
                ck.save(1, bad)
        with pytest.raises(StateError, match="non-negative int"):
            ck.save(-1, {})
        ck.save(1, {"a": np.zeros(2), "b" if rt.rank == 0 else "c": np.zeros(2)})
        with pytest.raises(CheckpointError, match=r"array keys .*ranks \[0\]: \['a', 'b'\]; ranks \[1\]: "
                                                  r"\['a', 'c'\]"):
            ck.wait()
        ck.save(2, {"w": Shard(np.zeros((2, 2)), (4, 2 + rt.rank), (2 * rt.rank, 0))})
        with pytest.raises(CheckpointError, match=r"key 'w': dtype and global shape .*ranks \[0\].*ranks \[1\]"):
            ck.wait()
        ck.save(3, {"w": Shard(np.zeros((2, 2)), (4, 2), (rt.rank, 0))})
        with pytest.raises(CheckpointError, match=r"key 'w': shards overlap .* ranks \[0\] and .* ranks \[1\]"):
            ck.wait()
        ck.save(4, {"w": Shard(np.zeros((2, 2)), (4, 2), (2 * rt.rank, 0))})  # the job goes on
        ck.wait()
        assert ck.latest() == 4
        # the failed saves left no folders behind (they were made while their snapshots were copied)
        assert [p.name for p in ck.places.directory.glob("step-*")] == ["step-000000004"]
        assert [p.name for p in (ck.places.node_root(ck.node) / "local").iterdir()] == ["step-000000004"]
    # the wrong directories
    if rt.rank == 0:
        (mpi_tmp_path / "other").mkdir()
        (mpi_tmp_path / "other" / "data.txt").write_text("not mine")
    comm.Barrier()
    with pytest.raises(NotACheckpointDirectoryError, match="is not an hpcrt checkpoint directory"):
        Checkpointer(mpi_tmp_path / "other", comm=rt.comm)
    with pytest.raises(ValueError, match="'partner' needs ranks on at least two nodes"):
        Checkpointer(mpi_tmp_path / "ckpt", comm=rt.comm, levels=("local", "partner"))
    comm.Barrier()
    if rt.rank == 0:  # a manifest from the future
        path = mpi_tmp_path / "ckpt" / "step-000000004" / "manifest-local.json"
        doc = json.loads(path.read_text())
        path.write_text(json.dumps({**doc, "format_version": 99}))
    comm.Barrier()
    with Checkpointer(mpi_tmp_path / "ckpt", comm=rt.comm, local_dir=mpi_tmp_path / "l") as ck:
        with pytest.raises(FormatVersionError, match="format version 99"):
            ck.restore()
    hpcrt.finalize()


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_retention_retires_files_off_the_commit_path(comm, mpi_tmp_path):
    rt = runtime()
    directory, local = mpi_tmp_path / "ckpt", mpi_tmp_path / "l"
    with Checkpointer(directory, comm=rt.comm, local_dir=local, levels=("local", "global"), keep=1) as ck:
        places = ck.places
        for step in (1, 2, 3):
            ck.save(step, make_state(step, rt.rank, rt.size))
        ck.wait()
        ck.save(3, make_state(30, rt.rank, rt.size))  # the newest step saved again
        ck.wait()
    comm.Barrier()
    trashes = [directory / ".trash", places.node_root(rt.node) / ".trash"]
    # the step saved again got new names (one tag for the whole save); the first save's files are retired
    tagged = {p.name.split(".")[1] for p in directory.rglob("*.h5")}
    assert len(tagged) == 1 and re.fullmatch("[0-9a-f]{8}", tag := tagged.pop())
    shared = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    node = sorted(p.relative_to(places.local_root).as_posix() for p in places.local_root.rglob("*") if p.is_file())
    assert shared == ["hpcrt-checkpoint.json", "hpcrt-checkpoint.lock", f"step-000000003/global.{tag}.h5",
                      "step-000000003/manifest-global.json", "step-000000003/manifest-local.json",
                      f"step-000000003/rank-00000.{tag}.h5", f"step-000000003/rank-00001.{tag}.h5"]
    assert node == [f"{rt.node}/local/step-000000003/rank-0000{r}.{tag}.h5" for r in range(rt.size)]
    assert all(not any(trash.iterdir()) for trash in trashes)
    comm.Barrier()
    if rt.rank == 0:  # what a crash between the rename and the unlink leaves behind
        for trash in trashes:
            (trash / "0123abcd.tmp").write_bytes(b"retired")
    comm.Barrier()
    with Checkpointer(directory, comm=rt.comm, local_dir=local) as fresh:
        assert not any(trashes[0].iterdir()) and not trashes[1].exists()  # the node's trash goes whole
        step, got = fresh.restore()
        assert step == 3
        assert_same(got, make_state(30, rt.rank, rt.size))
        arrays = [got["opt"]["count"], got["opt"]["mask"], got["opt"]["z"], got["params"]["w"].array]
        assert all(a.flags.writeable and a.flags.aligned for a in arrays)  # the caller's to change, view or copy
    hpcrt.finalize()


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_retention_counts_the_steps_an_earlier_run_committed(comm, mpi_tmp_path):
    rt = runtime()
    directory, local = mpi_tmp_path / "ckpt", mpi_tmp_path / "l"
    for steps in ((1, 2), (3,)):  # the second checkpointer finds steps 1 and 2 on disk
        with Checkpointer(directory, comm=rt.comm, local_dir=local, levels=("local", "global"), keep=2) as ck:
            for step in steps:
                ck.save(step, make_state(step, rt.rank, rt.size))
            ck.wait()
            listed, places = [e["step"] for e in ck.list()], ck.places
    assert listed == [2, 3]
    comm.Barrier()
    assert sorted(p.name for p in directory.glob("step-*")) == ["step-000000002", "step-000000003"]
    assert sorted(p.parent.name for p in places.local_root.rglob("*.h5")) == ["step-000000002"] * 2 + \
        ["step-000000003"] * 2
    hpcrt.finalize()


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_unwritable_and_full_targets(comm, mpi_tmp_path):
    rt = runtime()
    directory = mpi_tmp_path / "ckpt"
    with Checkpointer(directory, comm=rt.comm, local_dir=mpi_tmp_path / "l", levels=("local", "global")) as ck:
        ck.save(1, make_state(1, rt.rank, rt.size))
        ck.wait()
        if rt.rank == 0:  # rank 1's global file of step 2 cannot be renamed into place: a directory is in the way
            (directory / "step-000000002" / "rank-00001.h5").mkdir(parents=True)
        comm.Barrier()
        ck.save(2, make_state(2, rt.rank, rt.size))
        with pytest.raises(CheckpointError, match=r"step 2, level global, rank 1: IsADirectoryError"):
            ck.wait()
        assert {e["step"]: e["levels"] for e in ck.list()} == {1: ["local", "global"], 2: ["local"]}
        # a full disk: every write beyond 64 KiB fails (EFBIG stands in for ENOSPC)
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, old[1]))
        try:
            ck.save(3, {"big": np.ones(1 << 16)})
            with pytest.raises(CheckpointError, match=r"step 3, level local, rank 0: .*File too large"):
                ck.wait()
            # the data fits, HDF5's metadata (a 64 KiB JSON attribute after the data) does not
            resource.setrlimit(resource.RLIMIT_FSIZE, ((1 << 19) + (16 << 10), old[1]))
            ck.save(3, {"big": np.ones(1 << 16), "note": "x" * (64 << 10)})
            with pytest.raises(CheckpointError, match=r"step 3, level local, rank 0"):
                ck.wait()
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
            signal.signal(signal.SIGXFSZ, handler)
        assert not list(ck.places.local_root.rglob("*.tmp"))
        open_files = [os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink()]
        assert not [f for f in open_files if ".h5" in f], open_files  # no file left open by a failed save
        ck.save(4, make_state(4, rt.rank, rt.size))  # the job goes on
        ck.wait()
    if rt.rank == 0:
        (directory / "step-000000002" / "rank-00001.h5").rmdir()
    comm.Barrier()
    with Checkpointer(directory, comm=rt.comm, local_dir=mpi_tmp_path / "l") as fresh:
        assert [e["step"] for e in fresh.list()] == [1, 2, 4]
        for step in (1, 2, 4):
            assert_same(fresh.restore(step)[1], make_state(step, rt.rank, rt.size))
    hpcrt.finalize()
