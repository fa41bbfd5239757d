"""The bench job's figure: per collective, latency and busbw against message size (log-log),
every algorithm side by side with the baseline, a band from the fastest to the slowest rank, the
cost model's predictions dashed and labelled (those off by more than the report's miss factor
left out)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from hpcrt.jobs.bench.report import PREDICTION_MISS_FACTOR, Row, prediction_misses  # noqa: E402


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
            sizes = [r.size_bytes for r in line]
            latency.plot(sizes, [r.time_avg_us for r in line], "o-", color=color, label=label)
            latency.fill_between(sizes, [r.time_min_us for r in line], [r.time_max_us for r in line], color=color,
                                 alpha=0.15, linewidth=0)
            predicted = [(r.size_bytes, r.predicted_us) for r in line if r.predicted_us and not prediction_misses(r)]
            if predicted:
                latency.plot(*zip(*predicted), "--", color=color, alpha=0.6, label=f"{label} predicted")
            moving = [r for r in line if r.busbw_gbps > 0]  # none at one rank
            if moving:
                busbw.plot([r.size_bytes for r in moving], [r.busbw_gbps for r in moving], "o-", color=color,
                           label=label)
                # busbw is inverse to time: the slowest rank's time gives the band's bottom
                busbw.fill_between([r.size_bytes for r in moving],
                                   [r.busbw_gbps * r.time_avg_us / r.time_max_us for r in moving],
                                   [r.busbw_gbps * r.time_avg_us / r.time_min_us for r in moving],
                                   color=color, alpha=0.15, linewidth=0)
        latency.set(title=f"{collective}: time per call (band: fastest to slowest rank; dashed: predicted, "
                          f"within {PREDICTION_MISS_FACTOR:g}x)", xlabel="size (B)",
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
