"""The batch templates under a real Slurm (started by slurm/start-local-cluster.sh; skipped without one)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _slurm_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


pytestmark = pytest.mark.skipif(not _slurm_up(), reason="no Slurm cluster (run slurm/start-local-cluster.sh)")


def sbatch(tmp_path: Path, *args: str, timeout: float = 180) -> str:
    """Submit a template, wait for it, return its output file's text."""
    out = tmp_path / "job.out"
    result = subprocess.run(["sbatch", "--wait", "--overcommit", f"--output={out}", *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    text = out.read_text() if out.exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + text
    return text


def test_info_template_with_sample_topology(tmp_path):
    text = sbatch(tmp_path, "-n", "4", str(REPO / "slurm" / "info.sbatch"), "--topology", "two_nodes_mixed_nic")
    assert "4 on 2 node(s): node-ib, node-roce" in text
    assert "launcher         : a PMI launcher" in text


def test_wrong_pmi_plugin_is_named(tmp_path):
    out = tmp_path / "job.out"
    result = subprocess.run(["sbatch", "--wait", "--overcommit", "-n", "2", f"--output={out}",
                             str(REPO / "slurm" / "info.sbatch")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "HPCRT_SRUN_MPI": "none"})
    assert result.returncode != 0
    assert "Slurm srun started 2 tasks but MPI" in out.read_text()
