"""flake8 over the whole tree (settings in setup.cfg): style is part of the test suite."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_flake8_is_clean():
    result = subprocess.run([sys.executable, "-m", "flake8"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
