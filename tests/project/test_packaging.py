"""The wheel maps collectives/, checkpoint/ and jobs/ to hpcrt.* and ships the sample topology."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# source folder -> where its modules land in the installed package
MAPPING = {"hpcrt": "hpcrt", "collectives": "hpcrt/collectives", "checkpoint": "hpcrt/checkpoint",
           "jobs": "hpcrt/jobs"}


def source_modules() -> set[str]:
    """Every module of every package in the source tree, by its path inside the wheel."""
    found = set()
    for folder, target in MAPPING.items():
        for init in (REPO / folder).rglob("__init__.py"):
            package = init.parent
            for module in package.glob("*.py"):
                found.add(f"{target}/{module.relative_to(REPO / folder).as_posix()}")
    return found


def test_wheel_layout_and_import(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
                   check=True, timeout=300, capture_output=True)
    wheel = next(tmp_path.glob("hpcrt-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(source_modules() - names)
    assert not missing, f"modules missing from {wheel.name} (add their packages to pyproject.toml): {missing}"
    assert "hpcrt/topologies/two_nodes_mixed_nic.yaml" in names
    assert not any(n.startswith(("collectives/", "checkpoint/", "jobs/", "tests/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("import hpcrt, hpcrt.collectives, hpcrt.checkpoint, hpcrt.jobs; "
             "print(hpcrt.__file__); print(hpcrt.collectives.__file__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         check=True, capture_output=True, text=True, timeout=60).stdout.split()
    assert all(path.startswith(str(site)) for path in out), out
