"""The wheel maps collectives/, checkpoint/ and jobs/ to hpcrt.*, ships the sample topology, and every
module in it imports; no module sends with an MPI tag outside the one registry (hpcrt/core/tags.py)."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# source folder -> where its modules land in the installed package
MAPPING = {"hpcrt": "hpcrt", "collectives": "hpcrt/collectives", "checkpoint": "hpcrt/checkpoint",
           "jobs": "hpcrt/jobs"}


def source_files() -> dict[str, Path]:
    """Every Python file of the source folders (walked, not found through ``__init__.py`` files), by its path
    inside the wheel."""
    found = {}
    for folder, target in MAPPING.items():
        for module in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in module.parts:
                found[f"{target}/{module.relative_to(REPO / folder).as_posix()}"] = module
    return found


def test_wheel_layout_and_import(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
                   check=True, timeout=300, capture_output=True)
    wheel = next(tmp_path.glob("hpcrt-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(set(source_files()) - names)
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
    modules = [name[:-3].replace("/", ".").removesuffix(".__init__") for name in names
               if name.endswith(".py") and not name.endswith("__main__.py")]
    probe = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint(len(sys.argv) - 1)"
    done = subprocess.run([sys.executable, "-c", probe, *modules], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == [str(len(modules))], done.stderr[-3000:]


def _tag_claims(path: Path) -> list[str]:
    """Where a module gives an MPI tag as a number of its own: a number bound to a name with TAG in it, or
    passed as ``tag=``."""
    claims = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int):
            claims += [f"{path}:{node.lineno}" for target in node.targets
                       if isinstance(target, ast.Name) and "TAG" in target.id.upper()]
        if isinstance(node, ast.keyword) and node.arg == "tag" and isinstance(node.value, ast.Constant):
            claims.append(f"{path}:{node.value.lineno}")
    return claims


def test_every_mpi_tag_comes_from_the_registry_and_no_two_overlap():
    from hpcrt.core import tags
    registry = REPO / "hpcrt" / "core" / "tags.py"
    own = [claim for path in source_files().values() if path != registry for claim in _tag_claims(path)]
    assert not own, f"tags given outside hpcrt/core/tags.py: {own}"
    taken: dict[int, str] = {}
    for name, numbers in tags.claimed().items():
        for number in numbers:
            assert number not in taken, f"tag {number} claimed by both {taken[number]} and {name}"
            taken[number] = name
    assert len(taken) >= 12
