"""The job's end products on rank 0: ``summary.json`` (with a digest of the parameters that is
the same for any layout that computed the same bits) and ``train.png``."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional

import numpy as np
import xxhash

from hpcrt.jobs.train.metrics import read_metrics


def params_digest(params: np.ndarray) -> str:
    """xxh3-128 of the full flat parameters (on the host), in the model's canonical order."""
    return xxhash.xxh3_128_hexdigest(np.ascontiguousarray(params).tobytes())


def write_summary(path: Path, rows: list[dict], **fields: Any) -> dict:
    """``summary.json``: the run's fields plus what the metrics say (final loss, median tokens/s)."""
    summary = {"steps": rows[-1]["step"] if rows else 0,
               "final_loss": rows[-1]["loss"] if rows else None,
               "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows) if rows else None,
               **fields}
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def plot(path: Path, metrics: Path, stragglers: Path, floor: Optional[float], title: str) -> None:
    """Loss (with the entropy floor) and tokens/s against step; checkpoints and straggler reports marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics)
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    top.plot(steps, [r["loss"] for r in rows], label="loss")
    if floor is not None:
        top.axhline(floor, color="k", linestyle="--", label=f"entropy floor {floor:.3f}")
    bottom.plot(steps, [r["tokens_per_s"] for r in rows], color="tab:green", label="tokens/s")
    for i, row in enumerate(r for r in rows if r.get("checkpointed")):
        top.axvline(row["step"], color="tab:blue", alpha=0.3, label="checkpoint" if i == 0 else None)
        bottom.axvline(row["step"], color="tab:blue", alpha=0.3)
    for i, report in enumerate(_straggler_reports(stragglers)):
        top.axvline(report, color="tab:red", alpha=0.6, label="straggler reported" if i == 0 else None)
    top.set_ylabel("loss (nats/token)")
    bottom.set_ylabel("tokens/s")
    bottom.set_xlabel("step")
    top.set_title(title)
    top.legend()
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _straggler_reports(path: Path) -> list[int]:
    """The step at the end of each straggler window that named a straggler."""
    if not path.is_file():
        return []
    windows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [w["steps"][1] for w in windows if w.get("stragglers")]
