"""``hpcrt ckpt gc``: node-local leftovers of a checkpoint directory are listed and removed; what a
committed manifest references, what a live job holds and what lies behind a symbolic link is not."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import hpcrt
from hpcrt.checkpoint import Checkpointer


def gc_run(directory, local, *extra):
    """``hpcrt ckpt gc`` in a fresh process: its exit code, stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "hpcrt", "ckpt", "gc", str(directory), "--local-dir", str(local),
                           *extra], capture_output=True, text=True, timeout=60)


def gc(directory, local, *extra):
    done = gc_run(directory, local, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def listed(output, verb):
    """The paths gc printed after ``verb`` (``removed``, ``would remove``, ``refused``)."""
    return sorted(line[len(verb) + 1:].split(": ", 1)[0] for line in output.splitlines() if line.startswith(verb + " "))


def saved_job(directory, local):
    """A finished job's two committed steps on DIR and this node's local level; its places and node folder."""
    with Checkpointer(directory, levels=("local", "global"), local_dir=local) as ck:
        for step in (1, 2):
            ck.save(step, {"w": np.full(100, float(step))})
        ck.wait()
        return ck.places, ck.places.node_root(ck.node)


def referenced_files(directory, node_root):
    """The node-local files the manifests on disk list (read here as plain JSON)."""
    return sorted(node_root / record["path"] for manifest in directory.glob("step-*/manifest-local.json")
                  for record in json.loads(manifest.read_text())["files"])


def test_gc_removes_leftovers_and_keeps_what_manifests_or_a_live_job_need(tmp_path):
    hpcrt.init({"log_files": False})
    directory, local, outside = tmp_path / "ckpt", tmp_path / "local", tmp_path / "outside"
    levels = ("local", "global")
    with Checkpointer(directory, levels=levels, local_dir=local) as ck:  # a live job holds DIR
        for step in (1, 2):
            ck.save(step, {"w": np.full(100, float(step))})
        ck.wait()
        places, node_root = ck.places, ck.places.node_root(ck.node)
        leftovers = [node_root / "local" / "step-000000007",  # a save killed before its commit
                     node_root / "local" / "step-000000002" / "rank-00000.0123abcd.h5",  # a resave never committed
                     node_root / ".trash"]  # retired files not yet unlinked (here its .tmp file) go with it
        leftovers[0].mkdir()
        (leftovers[0] / "rank-00000.h5").write_bytes(b"torn")
        leftovers[1].write_bytes(b"left")
        leftovers[2].mkdir(exist_ok=True)
        (leftovers[2] / "0123abcd.tmp").write_bytes(b"retired")
        held = gc(directory, local)
        assert "nothing removed" in held and "in use by another Checkpointer" in held, held
        assert all(os.path.lexists(p) for p in leftovers)
    kept = {path: path.read_bytes() for path in referenced_files(directory, node_root)}
    assert len(kept) == 2 and all(kept)
    outside.mkdir()
    (outside / "rank-00000.h5").write_bytes(b"not hpcrt's to delete")
    links = [node_root / "local" / "step-000000008", places.local_root / "node-link"]
    for link in links:
        link.symlink_to(outside)

    dry = gc(directory, local, "--dry-run")
    assert listed(dry, "would remove") == sorted(map(str, leftovers)), dry
    assert f"refused {links[1]}" in dry and all(os.path.lexists(p) for p in leftovers)

    removed = gc(directory, local)
    assert listed(removed, "removed") == sorted(map(str, leftovers)), removed
    assert not any(os.path.lexists(p) for p in leftovers)
    assert {path: path.read_bytes() for path in kept} == kept  # the committed copies, untouched
    assert all(link.is_symlink() for link in links) and (outside / "rank-00000.h5").read_bytes() == \
        b"not hpcrt's to delete"
    with Checkpointer(directory, levels=levels, local_dir=local) as ck:
        assert ck.restore()[0] == 2 and ck.restored_from == {0: "local"}

    for link in links:  # once DIR is gone, nothing references its node folder: it goes whole
        link.unlink()
    shutil.rmtree(directory)
    gone = gc(directory, local, "--dir-removed")
    assert f"removed {sorted(kept)[0].parent}" in gone, gone
    assert not places.local_root.exists() and local.is_dir()


def test_gc_refuses_a_dir_this_host_does_not_see_unless_told_it_was_removed(tmp_path):
    hpcrt.init({"log_files": False})
    mount, local = tmp_path / "shared", tmp_path / "local"
    directory = mount / "ckpt"
    places, node_root = saved_job(directory, local)
    kept = {path: path.read_bytes() for path in referenced_files(directory, node_root)}
    mount.rename(tmp_path / "unmounted")  # DIR's file system is not mounted on this node: the path is not there

    for extra in ((), ("--dry-run",)):
        refused = gc_run(directory, local, *extra)
        assert refused.returncode == 2 and refused.stdout == "", refused
        assert refused.stderr.count("\n") == 1 and str(directory) in refused.stderr and \
            "does not exist on this host" in refused.stderr and "--dir-removed" in refused.stderr, refused.stderr
        assert {path: path.read_bytes() for path in kept} == kept

    (tmp_path / "unmounted").rename(mount)  # mounted again: the job restores from this node's copy
    with Checkpointer(directory, levels=("local", "global"), local_dir=local) as ck:
        assert ck.restore()[0] == 2 and ck.restored_from == {0: "local"}

    shutil.rmtree(directory)
    assert listed(gc(directory, local, "--dir-removed", "--dry-run"), "would remove") == [str(node_root / "local" / n)
                                                                                          for n in ("step-000000001",
                                                                                                    "step-000000002")]
    gc(directory, local, "--dir-removed")
    assert not places.local_root.exists()


def test_gc_and_start_up_cleanup_empty_the_trash_whatever_it_holds(tmp_path):
    hpcrt.init({"log_files": False})
    directory, local = tmp_path / "ckpt", tmp_path / "local"
    _, node_root = saved_job(directory, local)
    trash, retired = node_root / ".trash", "retired-by-an-older-hpcrt"  # not a *.tmp name
    trash.mkdir(exist_ok=True)
    (trash / retired).write_bytes(b"retired")
    assert f"removed {trash}" in gc(directory, local).splitlines() and not trash.exists()

    trash.mkdir(parents=True)
    (trash / retired).write_bytes(b"retired")
    Checkpointer(directory, levels=("local", "global"), local_dir=local).close()  # its start-up cleanup
    assert not trash.exists()


def undeletable(path):
    """Make ``path`` resist unlinking, also for root (immutable); returns how to undo it."""
    if os.getuid() != 0:
        path.parent.chmod(0o500)
        return lambda: path.parent.chmod(0o700)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("running as root needs chattr +i on this file system: install e2fsprogs, or run as a user")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_gc_names_what_resisted_removal(tmp_path):
    hpcrt.init({"log_files": False})
    directory, local = tmp_path / "ckpt", tmp_path / "local"
    _, node_root = saved_job(directory, local)
    stuck = node_root / "local" / "step-000000009" / "inner" / "rank-00000.h5"  # a save killed before its commit
    stuck.parent.mkdir(parents=True)
    stuck.write_bytes(b"torn")
    undo = undeletable(stuck)
    try:
        output = gc(directory, local)
        assert stuck.exists() and f"refused {stuck}: " in output, output
    finally:
        undo()
    assert f"removed {stuck.parents[1]}" in gc(directory, local) and not stuck.parents[1].exists()
