"""Promises of the checkpointer that only show when they are broken: every file it commits is
durable (fsync, rename, fsync of the folder), ``max_pending`` holds ``save()`` back, and start-up
removes what no manifest covers. Each runs one Checkpointer in this process (one rank)."""

import os
import threading
from pathlib import Path

import numpy as np

import hpcrt
from hpcrt.checkpoint import Checkpointer


def runtime():
    return hpcrt.init({"log_files": False})


def record_syncs_and_renames(monkeypatch):
    """``[("fsync", path) | ("rename", source, target)]`` in the order they completed, from every thread."""
    calls, lock = [], threading.Lock()
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd):
        real_fsync(fd)
        with lock:
            calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def renaming(real):
        def rename(source, target, **kwargs):
            real(source, target, **kwargs)
            with lock:
                calls.append(("rename", os.fspath(source), os.fspath(target)))
        return rename

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", renaming(real_replace))
    monkeypatch.setattr(os, "rename", renaming(real_rename))
    return calls


def test_every_rank_file_and_manifest_is_synced_renamed_and_its_folder_synced(tmp_path, monkeypatch):
    runtime()
    directory, local = tmp_path / "ckpt", tmp_path / "local"
    with Checkpointer(directory, levels=("local", "global"), local_dir=local) as ck:
        calls = record_syncs_and_renames(monkeypatch)
        ck.save(1, {"w": np.arange(50_000.0), "b": np.ones(3), "note": "x"})
        ck.wait()
        ck.save(1, {"w": np.zeros(50_000), "b": np.ones(3), "note": "y"})  # saved again: new names, new manifests
        ck.wait()
    monkeypatch.undo()
    committed = [p for root in (directory, local) for p in root.rglob("*")
                 if p.suffix == ".h5" or p.name.startswith("manifest-")]
    assert len(committed) == 5, committed  # local and global rank files, global file, two manifests
    written = [(i, c[1], c[2]) for i, c in enumerate(calls) if c[0] == "rename" and c[2].endswith((".h5", ".json"))]
    assert {str(p.resolve()) for p in committed} <= {target for _, _, target in written}
    assert sum(target.endswith("manifest-global.json") for _, _, target in written) == 2  # both commits seen
    for at, tmp, path in written:  # a data file's rename must be durable before a manifest vouches for it
        until = next((i for i, _, target in written if i > at and target.endswith(".json")), len(calls)) \
            if path.endswith(".h5") else len(calls)
        assert ("fsync", tmp) in calls[:at], f"{path}: its content was not fsynced before the rename"
        assert ("fsync", os.path.dirname(path)) in calls[at + 1:until], \
            f"{path}: its folder was not fsynced after the rename (before the commit)"


def test_save_waits_for_the_oldest_flush_beyond_max_pending(tmp_path):
    runtime()
    gate, events = threading.Event(), []
    with Checkpointer(tmp_path / "ckpt", levels=("global",), max_pending=2) as ck:
        ck._on_phase = lambda name: gate.wait(60) if name == "digest" else None  # flushes stall until released

        def caller():
            for step in (1, 2):
                ck.save(step, {"x": np.full(4, float(step))})
            events.append("saves 1 and 2 returned")
            ck.save(3, {"x": np.full(4, 3.0)})
            events.append("save 3 returned")

        thread = threading.Thread(target=caller)
        thread.start()
        thread.join(timeout=2.0)  # a save() that does not wait returns well within this
        events.append("flushes released")
        gate.set()
        thread.join(timeout=60)
        ck.wait()
        assert [e["step"] for e in ck.list()] == [1, 2, 3]
    assert events == ["saves 1 and 2 returned", "flushes released", "save 3 returned"]


def test_start_up_removes_step_folders_and_files_no_manifest_covers(tmp_path):
    runtime()
    directory, local = tmp_path / "ckpt", tmp_path / "local"
    levels = ("local", "global")
    with Checkpointer(directory, levels=levels, local_dir=local) as ck:
        ck.save(1, {"w": np.arange(3.0)})
        ck.wait()
        node_root = ck.places.node_root(ck.node)
    committed = {p: p.read_bytes() for root in (directory, local) for p in root.rglob("*.h5")}
    # what a crash leaves: a save of step 2 that never committed, and new names of step 1 never committed
    orphans = [directory / "step-000000002" / "rank-00000.h5", directory / "step-000000002" / "global.h5",
               directory / "step-000000001" / "global.0123abcd.h5",
               directory / "step-000000001" / "rank-00000.0123abcd.h5",
               node_root / "local" / "step-000000002" / "rank-00000.h5",
               node_root / "local" / "step-000000001" / "rank-00000.0123abcd.h5"]
    for path in orphans:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"torn")
    users = directory / "step-000000002" / "notes.txt"  # not a name hpcrt writes: never deleted
    users.write_text("mine")
    with Checkpointer(directory, levels=levels, local_dir=local) as ck:
        assert ck.restore()[0] == 1
    assert [p for p in orphans if p.exists()] == []
    assert not (node_root / "local" / "step-000000002").exists()
    assert sorted(Path(directory / "step-000000002").iterdir()) == [users]
    assert {p: p.read_bytes() for p in committed} == committed
