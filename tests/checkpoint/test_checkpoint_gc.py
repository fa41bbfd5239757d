"""``hpcrt ckpt gc``: node-local leftovers of a checkpoint directory are listed and removed; what a
committed manifest references, what a live job holds and what lies behind a symbolic link is not."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np

import hpcrt
from hpcrt.checkpoint import Checkpointer


def gc(directory, local, *extra):
    done = subprocess.run([sys.executable, "-m", "hpcrt", "ckpt", "gc", str(directory), "--local-dir", str(local),
                           *extra], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


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
                     node_root / ".trash" / "0123abcd.tmp"]  # retired, not yet unlinked
        leftovers[0].mkdir()
        (leftovers[0] / "rank-00000.h5").write_bytes(b"torn")
        for path in leftovers[1:]:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"left")
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
    assert sorted(line.split(" ", 2)[2] for line in dry.splitlines() if line.startswith("would remove ")) == \
        sorted(map(str, leftovers)), dry
    assert f"refused {links[1]}" in dry and all(os.path.lexists(p) for p in leftovers)

    removed = gc(directory, local)
    assert sorted(line.split(" ", 1)[1] for line in removed.splitlines() if line.startswith("removed ")) == \
        sorted(map(str, leftovers)), removed
    assert not any(os.path.lexists(p) for p in leftovers)
    assert {path: path.read_bytes() for path in kept} == kept  # the committed copies, untouched
    assert all(link.is_symlink() for link in links) and (outside / "rank-00000.h5").read_bytes() == \
        b"not hpcrt's to delete"
    with Checkpointer(directory, levels=levels, local_dir=local) as ck:
        assert ck.restore()[0] == 2 and ck.restored_from == {0: "local"}

    for link in links:  # once DIR is gone, nothing references its node folder: it goes whole
        link.unlink()
    shutil.rmtree(directory)
    gone = gc(directory, local)
    assert f"removed {sorted(kept)[0].parent}" in gone, gone
    assert not places.local_root.exists() and local.is_dir()
