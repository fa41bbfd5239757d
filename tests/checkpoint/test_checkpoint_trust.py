"""What the checkpointer promises on hostile input (issue 15): a committed step is never lost, nothing
outside the job's own directories is touched, and no bad input hangs a job — every rank gets the
same clear error or the same fallback."""

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import hpcrt
from hpcrt.checkpoint import Checkpointer, CheckpointError, NotACheckpointDirectoryError, Shard

sys.path.insert(0, str(Path(__file__).parent / "cases"))
from fabricate import fabricate, state  # noqa: E402

JOB = str(Path(__file__).parent / "cases" / "ckpt_job.py")


def runtime():
    return hpcrt.init({"log_files": False})


@contextlib.contextmanager
def deadline(seconds):
    """Fail, instead of hanging, when the block runs longer than ``seconds`` (SIGALRM)."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class Captured(logging.Handler):
    """The checkpointer's log records (hpcrt's logger does not propagate to pytest's)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def captured_warnings():
    handler, logger = Captured(), logging.getLogger("hpcrt.checkpoint")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


# --- 2: one writer per directory ------------------------------------------------------------------

def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    from hpcrt.checkpoint.files.lock import DirectoryLock, DirectoryLockedError
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from hpcrt.checkpoint.files.lock import DirectoryLock\n"
                               "DirectoryLock(__import__('pathlib').Path(sys.argv[1])).acquire()\n"
                               "print('held', flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryLockedError, match=rf"in use by another Checkpointer \(host "
                                                       rf"{re.escape(socket.gethostname())}, pid {holder.pid}, since"):
            DirectoryLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no cleanup runs; the kernel drops the lock
        holder.wait()
    lock = DirectoryLock(tmp_path)
    assert lock.acquire()
    with pytest.raises(DirectoryLockedError, match=f"pid {os.getpid()}"):  # a second one in this process too
        DirectoryLock(tmp_path).acquire()
    lock.release()
    DirectoryLock(tmp_path).acquire()


def test_the_lock_without_flock_takes_over_a_dead_holder_only(tmp_path, monkeypatch):
    import errno
    import fcntl
    from hpcrt.checkpoint.files import lock as lock_module

    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / lock_module.LOCK_NAME
    for pid, host, taken in ((dead.pid, socket.gethostname(), True), (os.getppid(), socket.gethostname(), False),
                             (dead.pid, "another-host", False)):
        path.write_text(json.dumps({"host": host, "pid": pid, "since": 0}))
        lock = lock_module.DirectoryLock(tmp_path)
        if taken:
            assert lock.acquire() and json.loads(path.read_text())["pid"] == os.getpid()
            lock.release()
            assert not path.exists()
        else:
            with pytest.raises(lock_module.DirectoryLockedError, match=f"host {host}, pid {pid}.*remove {path}"):
                lock.acquire()


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_one_writer_per_directory_and_a_private_node_folder(comm, mpi_tmp_path):
    rt = runtime()
    directory, local = mpi_tmp_path / "ckpt", mpi_tmp_path / "local"
    pid0 = comm.bcast(os.getpid())
    with Checkpointer(directory, comm=rt.comm, local_dir=local) as first:
        with pytest.raises(CheckpointError, match=rf"{directory} is in use by another Checkpointer \(host "
                                                  rf"{re.escape(socket.gethostname())}, pid {pid0}"):
            Checkpointer(directory, comm=rt.comm, local_dir=local)
        first.save(1, {"x": np.arange(3)})
        first.wait()
        assert first.latest() == 1 and os.stat(first.places.local_root).st_mode & 0o777 == 0o700
    with Checkpointer(directory, comm=rt.comm, local_dir=local) as again:  # close() released it
        assert again.restore()[0] == 1
    # 5: someone else made the node-local folder first, as a link into their own folder
    from hpcrt.checkpoint.files.levels import Places
    theirs, places = mpi_tmp_path / "theirs", Places.of(mpi_tmp_path / "ckpt2", local)
    if rt.rank == 0:
        (theirs / "node" / "local" / "step-000000001").mkdir(parents=True)
        (theirs / "node" / "local" / "step-000000001" / "keep.txt").write_text("theirs")
        places.local_root.symlink_to(theirs)
    comm.Barrier()
    with pytest.raises(CheckpointError, match="node-local checkpoint folder .* symbolic link"):
        Checkpointer(mpi_tmp_path / "ckpt2", comm=rt.comm, local_dir=local)
    assert [p.name for p in theirs.rglob("*")] == ["node", "local", "step-000000001", "keep.txt"]
    comm.Barrier()
    if os.getuid() == 0:  # a real folder of another user's (only root can make one for the test)
        if rt.rank == 0:
            places.local_root.unlink()
            places.local_root.mkdir(mode=0o777)
            os.chown(places.local_root, 65534, 65534)
        comm.Barrier()
        with pytest.raises(CheckpointError, match="owned by uid 65534"):
            Checkpointer(mpi_tmp_path / "ckpt2", comm=rt.comm, local_dir=local)
    hpcrt.finalize()


def test_a_private_folder_is_made_or_checked(tmp_path):
    from hpcrt.checkpoint.files.safety import Refused, private_dir
    private_dir(tmp_path / "a" / "new")
    assert os.stat(tmp_path / "a" / "new").st_mode & 0o777 == 0o700
    (tmp_path / "old").mkdir(mode=0o755)  # made by an older hpcrt with the default mode
    private_dir(tmp_path / "old")
    assert os.stat(tmp_path / "old").st_mode & 0o777 == 0o700
    (tmp_path / "link").symlink_to(tmp_path / "old")
    (tmp_path / "file").write_text("")
    for name, why in (("link", "a symbolic link"), ("file", "a regular file|not a directory")):
        with pytest.raises(Refused, match=why):
            private_dir(tmp_path / name)


# --- 4: nothing outside the checkpoint's own directories is touched ----------------------------

def test_paths_from_a_manifest_never_leave_the_directory(tmp_path):
    from hpcrt.checkpoint.files import retention
    from hpcrt.checkpoint.format import manifest
    places = fabricate(tmp_path / "ckpt", steps=(1, 2, 3))
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    victim = outside / "victim.txt"
    victim.write_text("not a checkpoint")
    (places.step_dir(2) / "rank-00001.h5").unlink()
    (places.step_dir(2) / "rank-00001.h5").symlink_to(victim)  # a link out of DIR, at a good name
    good, bad = {}, {}
    for step, path in ((1, "../outside/victim.txt"), (2, None), (3, str(outside / "dir"))):
        if path is not None:
            doc_path = places.manifest_path(step, "global")
            good[step] = doc_path.read_text()
            doc = json.loads(good[step])
            doc["files"][1]["path"] = path
            doc_path.write_text(json.dumps(doc))
            bad[step] = doc["files"]
    ledger = retention.Ledger(places)
    dropped = ledger.retire("global", 0)  # retention of every step: only what the manifests may name goes
    retired = retention.retire_files(places, "global", dropped)
    assert victim.read_text() == "not a checkpoint" and (outside / "dir").is_dir()
    assert len(retired) == 2  # step 2's rank 0 file and global file; its link to the victim is refused
    for step, why in ((1, "is not a file of step 1"), (3, "is not a file of step 3")):
        doc_path = places.manifest_path(step, "global")
        doc_path.parent.mkdir(exist_ok=True)
        doc_path.write_text(json.dumps({**json.loads(good[step]), "files": bad[step]}))
        with pytest.raises(manifest.ManifestError, match=why):
            manifest.read(places, step, "global")
    with pytest.raises(Exception, match="symbolic link"):
        places.confined("global", None, "step-000000002/rank-00001.h5")
    # a leftover directory (and a link out) in the trash never blocks the next start-up
    (places.directory / ".trash" / "0123.tmp").mkdir(parents=True)
    (places.directory / ".trash" / "4567.tmp").symlink_to(outside)
    left = retention.clean_shared(places)
    assert [Path(p).name for p, _ in left] == ["0123.tmp"] and victim.exists()
    assert not (places.directory / ".trash" / "4567.tmp").is_symlink()


# --- 9 and 7: `hpcrt ckpt` on hostile directories ---------------------------------------------------

def ckpt_cli(capsys, *args):
    from hpcrt.cli import main
    with deadline(30):
        code = main(["ckpt", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


DAMAGE = {
    "non-UTF-8 byte": lambda text: text.encode()[:20] + b"\xff" + text.encode()[20:],
    "renamed key": lambda text: text.replace('"files"', '"filez"').encode(),
    "wrong type": lambda text: _edit(text, lambda d: d.update(world_size="2")),
    "no files": lambda text: json.dumps({**json.loads(text), "files": []}).encode(),
    "no ranks": lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "ranks"}).encode(),
    "short array row": lambda text: _edit(text, lambda d: d["ranks"][1]["arrays"][0].pop()),
    "one rank fewer": lambda text: _edit(text, lambda d: (d.update(world_size=1), d["ranks"].pop(),
                                                          d["files"].pop(1))),
    "an offset off by one": lambda text: _edit(text, lambda d: d["ranks"][1]["arrays"][-1][4].__setitem__(0, 9)),
    "deep nesting": lambda text: b"[" * 100000 + b"]" * 100000,
    "a huge number": lambda text: re.sub(r'"step": ?2', '"step":' + "9" * 5000, text).encode(),
}


def _edit(text, change):
    doc = json.loads(text)
    change(doc)
    return json.dumps(doc).encode()


def swap_offsets(doc):
    """Swap the two ranks' shards of ``w`` consistently: the manifest still tiles the global array,
    only the rank files can tell (8 rows at 0 and 7 rows at 8 become 8 rows at 7 and 7 rows at 0)."""
    rows = [next(r for r in rank["arrays"] if r[0] == "w") for rank in doc["ranks"]]
    rows[0][4], rows[1][4] = [rows[1][2][0], 0], [0, 0]


def test_ckpt_cli_on_hostile_directories(tmp_path, capsys):
    places = fabricate(tmp_path / "ckpt")
    manifest_path = places.manifest_path(2, "global")
    good = manifest_path.read_text()
    code, out, err = ckpt_cli(capsys, "verify", places.directory)
    assert code == 0 and "6 ok, 0 bad" in out, out + err
    for name, damage in DAMAGE.items():
        manifest_path.write_bytes(damage(good))
        for action in ("list", "verify"):
            code, out, err = ckpt_cli(capsys, action, places.directory)
            lines = err.splitlines()
            assert code == 2 and len(lines) == 1 and str(manifest_path) in lines[0], (name, action, err)
            assert ("     1" in out) if action == "list" else ("3 ok, 0 bad" in out), (name, out)  # step 1 reported
    # 7: a manifest that still tiles, but contradicts the verified rank files
    manifest_path.write_bytes(_edit(good, swap_offsets))
    code, out, err = ckpt_cli(capsys, "verify", places.directory, "--step", 2)
    assert code == 1 and re.findall(r"^BAD: step 2 level global rank \d: .*contradicts its manifest: array 'w'",
                                    out, re.M), out + err
    manifest_path.write_text(good)
    # files that are not regular files: a FIFO and an endless device, never read
    rank_file = places.step_dir(2) / "rank-00001.h5"
    rank_file.unlink()
    os.mkfifo(rank_file)
    code, out, err = ckpt_cli(capsys, "verify", places.directory)
    assert code == 1 and re.search(r"^BAD: step 2 level global rank 1: .*is not a regular file \(it is a FIFO\)",
                                   out, re.M)
    manifest_path.unlink()
    manifest_path.symlink_to("/dev/zero")
    code, out, err = ckpt_cli(capsys, "list", places.directory)
    assert code == 2 and "symbolic link" in err and len(err.splitlines()) == 1
    manifest_path.unlink()
    os.mkfifo(manifest_path)
    code, out, err = ckpt_cli(capsys, "inspect", places.directory, "--step", 2)
    assert code == 2 and "FIFO" in err and len(err.splitlines()) == 1
    marker = places.directory / "hpcrt-checkpoint.json"
    for content in (b'{"format": "hpcrt-\xff"}', b"[" * 10000):
        marker.write_bytes(content)
        code, out, err = ckpt_cli(capsys, "list", places.directory)
        assert code == 2 and len(err.splitlines()) == 1 and str(marker) in err, err


# --- 13: many small arrays ----------------------------------------------------------------------------

def test_many_small_arrays_are_packed_into_one_dataset(tmp_path):
    import h5py
    from hpcrt.backends.staging import PinnedPool
    from hpcrt.checkpoint.files.levels import Places
    from hpcrt.checkpoint.format import manifest
    from hpcrt.checkpoint.format.entries import flatten
    from hpcrt.checkpoint.format.hdf5 import file_attrs, read_verified, write_rank_file
    from hpcrt.checkpoint.restore.assemble import assemble as _assemble
    from hpcrt.checkpoint.save.snapshot import take_snapshot
    state = {f"layer{i:04d}": {"bias": np.full(8, i, dtype=np.float64)} for i in range(10_000)}
    state["big"] = np.arange(1 << 16, dtype=np.float32)
    snap = take_snapshot(0, flatten(state), PinnedPool(sys.maxsize))
    path = tmp_path / "rank-00000.h5"
    size, digest = write_rank_file(path, snap, file_attrs(0, 1, rank=0))
    with h5py.File(path) as f:
        assert set(f) == {"_hpcrt_packed", "big"}
    assert size < 2 * (640_000 + (1 << 18))  # was 4.9 MB of HDF5 objects for the 640 KB of small arrays
    places = Places.of(tmp_path / "ckpt", tmp_path / "local")
    manifest.create_directory(places)
    manifest.write(places, 0, "global", manifest.build(0, "global", ["n"], [snap.entries], [], save="0"))
    assert places.manifest_path(0, "global").stat().st_size < 700_000  # was 2 MB (indented JSON)
    got = _assemble([snap.entries], {}, 0, {0: read_verified(path, size, digest)})
    assert all(np.array_equal(got[f"layer{i:04d}/bias"], np.full(8, i)) for i in range(0, 10_000, 997))
    assert np.array_equal(got["big"], state["big"])


# --- 1 and 3: a committed step survives a failed save of it; failures surface at save() -----------

def payload(step, rank, size):
    return {"w": Shard(np.arange(4.0) + 4 * rank + 100 * step, (4 * size,), (4 * rank,)),
            "b": np.full(2, step), "meta": {"step": step}}


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_a_failed_resave_keeps_the_committed_step_and_failures_surface_at_save(comm, mpi_tmp_path):
    rt = runtime()
    directory, local = mpi_tmp_path / "ckpt", mpi_tmp_path / "local"
    with Checkpointer(directory, comm=rt.comm, local_dir=local, levels=("local", "global"), max_pending=1) as ck:
        ck.save(3, payload(3, rt.rank, rt.size))
        ck.wait()
        extra = {"extra": np.zeros(1)} if rt.rank == 1 else {}
        ck.save(3, {**payload(30, rt.rank, rt.size), **extra})  # rejected: one rank holds an extra key
        with pytest.raises(CheckpointError, match="array keys"):
            ck.wait()
        ck.save(4, {**payload(4, rt.rank, rt.size), **extra})  # fails in the background...
        with pytest.raises(CheckpointError, match=r"step 4: ranks disagree on the array keys.*step 5.* not "
                                                  r"started"):
            ck.save(5, payload(5, rt.rank, rt.size))  # ...and the next save() says so, on every rank
        ck.save(5, payload(5, rt.rank, rt.size))
        ck.wait()
    comm.Barrier()
    with Checkpointer(directory, comm=rt.comm, local_dir=local) as fresh:  # start-up cleanup ran
        assert fresh.list() == [{"step": 3, "levels": ["local", "global"]}, {"step": 5, "levels": ["local", "global"]}]
        step, got = fresh.restore(3)
        assert step == 3 and np.array_equal(got["w"].array, payload(3, rt.rank, rt.size)["w"].array)
        if rt.rank == 0:  # step 5's rank-1 file is corrupt at both levels
            victims = [*local.rglob("step-000000005/rank-00001.h5"), directory / "step-000000005" / "rank-00001.h5"]
            for path in victims:
                data = bytearray(path.read_bytes())
                data[-1] ^= 0xFF
                path.write_bytes(bytes(data))
        comm.Barrier()
        with captured_warnings() as warnings:
            step, got = fresh.restore()
        assert step == 3 and got["meta"] == {"step": 3}
        if rt.rank == 0:
            assert any(re.search(r"skipping step 5 .*rank 1's file.*checksum.*trying step 3", w) for w in warnings), \
                warnings
    hpcrt.finalize()


# --- 6 and 7: a damaged manifest falls back on every rank ----------------------------------------

@pytest.mark.mpi(ranks=[2], timeout=90)
def test_damaged_manifests_fall_back_to_the_older_step_on_every_rank(comm, mpi_tmp_path):
    rt = runtime()
    directory = mpi_tmp_path / "ckpt"
    with Checkpointer(directory, comm=rt.comm, local_dir=mpi_tmp_path / "local", levels=("global",)) as ck:
        for step in (1, 2):
            ck.save(step, state(step, rt.rank, rt.size))
        ck.wait()
        manifest_path = directory / "step-000000002" / "manifest-global.json"
        good = manifest_path.read_text() if rt.rank == 0 else None
        comm.Barrier()
        cases = {**{k: v for k, v in DAMAGE.items() if k != "deep nesting"},
                 "offsets swapped (only the files can tell)": lambda text: _edit(text, swap_offsets)}
        for name, damage in cases.items():
            if rt.rank == 0:
                manifest_path.write_bytes(damage(good))
            comm.Barrier()
            with captured_warnings() as warnings:
                step, got = ck.restore()
            assert step == 1, name
            want = state(1, rt.rank, rt.size)
            assert np.array_equal(got["w"].array, want["w"].array) and got["w"].offset == want["w"].offset, name
            assert np.array_equal(got["b"], want["b"]) and got["meta"] == want["meta"], name
            if rt.rank == 0:
                assert any("step 2" in w or "step-000000002" in w for w in warnings), (name, warnings)
            comm.Barrier()
        if rt.rank == 0:
            manifest_path.write_text(good)
            (directory / "hpcrt-checkpoint.json").write_bytes(b'{"format": "\xff"}')
        comm.Barrier()
        with pytest.raises(NotACheckpointDirectoryError, match="hpcrt-checkpoint.json is not UTF-8"):
            ck.restore()  # every rank raises it: none waits for rank 0
    hpcrt.finalize()


# --- 8: a rank that skips a checkpoint collective ---------------------------------------------------

@pytest.mark.mpi(ranks=[2], timeout=60)
def test_a_rank_that_skips_a_save_fails_it_instead_of_hanging(comm, mpi_tmp_path):
    from hpcrt.core import trace_hook as trace
    from hpcrt.monitor.recorder import FlightRecorder
    rt = runtime()
    recorder = FlightRecorder(256)
    trace.set_recorder(recorder)  # what the monitor installs: its hang detection reads these records
    try:
        ck = Checkpointer(mpi_tmp_path / "ckpt", comm=rt.comm, local_dir=mpi_tmp_path / "local", levels=("global",),
                          collective_timeout_s=1.5)
        ck.save(1, {"x": np.arange(3)})
        ck.wait()
        started = time.monotonic()
        if rt.rank == 0:  # rank 1 skips this save
            ck.save(2, {"x": np.arange(3)})
            with pytest.raises(CheckpointError, match=r"step 2: .*'ckpt_digest'.*not every rank reached it within "
                                                      r"1.5 s"):
                ck.wait()
            with pytest.raises(CheckpointError, match="no longer be used"):
                ck.save(3, {"x": np.arange(3)})
        ck.close()
        assert time.monotonic() - started < 20
    finally:
        trace.set_recorder(None)
    records = [r for r in recorder.records() if r["kind"] == "collective"]
    ops = [r["op"] for r in records]
    assert ops[:4] == ["ckpt_register", "ckpt_open", "ckpt_open_directory", "ckpt_open_local"] and "ckpt_vote" in ops
    assert all(r["state"] == "completed" for r in records)
    waited = [r["t_exit"] - r["t_enter"] for r in records if r["op"] == "ckpt_digest"]
    assert len(waited) == (2 if rt.rank == 0 else 1) and (rt.rank == 1 or waited[-1] >= 1.5)
    hpcrt.finalize()


# --- 1: kill -9 during the re-save of the step just restored -------------------------------------

def test_sigkill_during_the_resave_of_the_restored_step_keeps_it(launch, tmp_path):
    directory, local = tmp_path / "ckpt", tmp_path / "local"
    killed = launch([JOB, "resave", str(directory), str(local), "local:write"], ranks=2, timeout=60)
    assert killed.returncode != 0 and "KILL rank=1 phase=local:write" in killed.stdout, killed.stdout + killed.stderr
    check = launch([JOB, "check", str(directory), str(local)], ranks=2, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    (row,) = json.loads(re.search(r"^RESULTS (.*)$", check.stdout, re.M).group(1))
    assert row["step"] == 2 and row["ok"] and row["committed"] == [2], row  # the first save of step 2, intact


def test_a_failed_directory_sync_after_the_rename_keeps_the_new_file(tmp_path, monkeypatch):
    from hpcrt.checkpoint.files import commit
    target = tmp_path / "manifest-global.json"
    target.write_text("old")

    def broken(path):
        raise OSError(5, "Input/output error", str(path))
    monkeypatch.setattr(commit, "make_dirs_durable", lambda path: None)
    monkeypatch.setattr(commit, "fsync_dir", broken)
    with captured_warnings() as said:
        with commit.atomic_path(target) as tmp:  # the rename is the commit: a failed sync must not undo it
            tmp.write_text("new")
    assert target.read_text() == "new" and not list(tmp_path.glob("*.tmp"))
    assert any("could not be synced" in message for message in said)


def test_the_monitor_waits_for_the_checkpointers_own_bound_on_its_collectives():
    from hpcrt.core import trace_hook as trace
    trace.allow_longer("ckpt_", 600.0)
    assert trace.timeout_for("ckpt_vote", 60.0) == 600.0
    assert trace.timeout_for("allreduce", 60.0) == 60.0


def test_start_up_cleanup_leaves_the_users_own_temporaries(tmp_path):
    runtime()
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, levels=("global",)) as ck:
        ck.save(1, {"w": np.arange(3.0)})
        ck.wait()
    mine = directory / "notes"
    mine.mkdir()
    (mine / "draft.tmp").write_text("the user's")
    (directory / "step-000000001" / "rank-00000.h5.tmp").write_text("a crash's")
    with Checkpointer(directory, levels=("global",)):
        pass
    assert (mine / "draft.tmp").read_text() == "the user's"
    assert not (directory / "step-000000001" / "rank-00000.h5.tmp").exists()


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_restore_with_boxes_on_some_ranks_only_takes_one_path_on_all(comm, mpi_tmp_path):
    rt = runtime()
    directory = mpi_tmp_path / "ckpt"
    with Checkpointer(directory, comm=rt.comm, levels=("memory", "global")) as ck:
        ck.save(1, {"w": Shard(np.full(2, float(rt.rank)), (4,), (2 * rt.rank,))})
        ck.wait()
        with deadline(30):  # rank 1 asks for boxes, rank 0 does not: no mismatched collectives
            step, got = ck.restore(shards={"w": ((0,), (4,))} if rt.rank == 1 else None)
    assert step == 1
    expected = [0.0, 0.0, 1.0, 1.0] if rt.rank == 1 else [float(rt.rank)] * 2
    assert got["w"].array.tolist() == expected
