"""The bench job's figure: per collective, latency and busbw against message size (log-log),
every algorithm side by side with the baseline, the cost model's predictions dashed."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from hpcrt.jobs.bench.report import Row  # noqa: E402


def plot(path: Path, rows: Sequence[Row], title: str) -> None:
    """Write ``path`` (PNG): one row of two panels per collective."""
    collectives = list(dict.fromkeys(r.collective for r in rows))
    fig, axes = plt.subplots(len(collectives), 2, figsize=(11, 3.6 * len(collectives)), squeeze=False)
    for (latency, busbw), collective in zip(axes, collectives):
        mine = [r for r in rows if r.collective == collective]
        several_ops = len({r.op for r in mine}) > 1
        for (algorithm, op), color in zip(dict.fromkeys((r.algorithm, r.op) for r in mine), _colors()):
            line = sorted((r for r in mine if (r.algorithm, r.op) == (algorithm, op)), key=lambda r: r.size_bytes)
            label = f"{algorithm} ({op})" if several_ops else algorithm
            latency.plot([r.size_bytes for r in line], [r.time_avg_us for r in line], "o-", color=color, label=label)
            predicted = [(r.size_bytes, r.predicted_us) for r in line if r.predicted_us]
            if predicted:
                latency.plot(*zip(*predicted), "--", color=color, alpha=0.6)
            moving = [(r.size_bytes, r.busbw_gbps) for r in line if r.busbw_gbps > 0]  # none at one rank
            if moving:
                busbw.plot(*zip(*moving), "o-", color=color, label=label)
        latency.set(title=f"{collective}: time per call (dashed: predicted)", xlabel="size (B)",
                    ylabel="time avg (µs)", xscale="log", yscale="log")
        busbw.set(title=f"{collective}: bus bandwidth", xlabel="size (B)", ylabel="busbw (GB/s)",
                  xscale="log", yscale="log")
        for ax in (latency, busbw):
            ax.grid(True, which="both", alpha=0.3)
        latency.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _colors() -> list:
    return plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4
