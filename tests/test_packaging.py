"""The wheel maps collectives/, checkpoint/ and jobs/ to hpcrt.* and ships the sample topology."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_layout_and_import(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
                   check=True, timeout=300, capture_output=True)
    wheel = next(tmp_path.glob("hpcrt-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("hpcrt/__init__.py", "hpcrt/cli.py", "hpcrt/collectives/__init__.py",
                     "hpcrt/checkpoint/__init__.py", "hpcrt/jobs/__init__.py",
                     "hpcrt/topologies/two_nodes_mixed_nic.yaml"):
        assert expected in names, f"{expected} missing from {wheel.name}"
    assert not any(n.startswith(("collectives/", "checkpoint/", "jobs/", "tests/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("import hpcrt, hpcrt.collectives, hpcrt.checkpoint, hpcrt.jobs; "
             "print(hpcrt.__file__); print(hpcrt.collectives.__file__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         check=True, capture_output=True, text=True, timeout=60).stdout.split()
    assert all(path.startswith(str(site)) for path in out), out
