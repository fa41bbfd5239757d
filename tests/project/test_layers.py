"""The one-way import rules of docs/ARCHITECTURE.md, read from every module's import statements (also
the ones inside functions): the core never imports a component, the monitor never imports collectives or
checkpoint, collectives and checkpoint never import each other or the jobs."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = ("hpcrt/core", "hpcrt/topology", "hpcrt/backends", "hpcrt/costmodel")
FORBIDDEN = {
    **{folder: ("hpcrt.monitor", "hpcrt.collectives", "hpcrt.checkpoint", "hpcrt.jobs") for folder in CORE},
    "hpcrt/monitor": ("hpcrt.collectives", "hpcrt.checkpoint", "hpcrt.jobs"),
    "collectives": ("hpcrt.checkpoint", "hpcrt.jobs"),
    "checkpoint": ("hpcrt.collectives", "hpcrt.jobs"),
}


def imported(path: Path) -> set[str]:
    """Every absolute module name a file imports (relative imports are not used in the package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_point_one_way(folder):
    wrong = [f"{path.relative_to(REPO)} imports {name}"
             for path in sorted((REPO / folder).rglob("*.py"))
             for name in sorted(imported(path))
             if name.startswith(FORBIDDEN[folder])]
    assert not wrong, wrong


def test_top_level_hpcrt_modules_are_only_the_public_faces():
    """Outside its capability folders, hpcrt/ holds only the package face, the command line and ``-m``."""
    assert sorted(p.name for p in (REPO / "hpcrt").glob("*.py")) == ["__init__.py", "__main__.py", "cli.py"]
