"""The bench job's results: one row per collective, op, size and algorithm, printed as
nccl-tests prints them, summarized against the baseline, and written as CSV and JSON."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional, Sequence

COLUMNS = (  # (header, width, row field, format)
    ("size(B)", 12, "size_bytes", "d"),
    ("count", 10, "count", "d"),
    ("type", 8, "dtype", "s"),
    ("redop", 7, "op", "s"),
    ("algorithm", 12, "algorithm", "s"),
    ("time_avg(us)", 13, "time_avg_us", ".2f"),
    ("time_min(us)", 13, "time_min_us", ".2f"),
    ("time_max(us)", 13, "time_max_us", ".2f"),
    ("algbw(GB/s)", 12, "algbw_gbps", ".3f"),
    ("busbw(GB/s)", 12, "busbw_gbps", ".3f"),
    ("#wrong", 7, "wrong", "d"),
    ("predicted(us)", 14, "predicted_us", ".2f"),
)


@dataclass(frozen=True)
class Row:
    """One measurement; times are per call, averaged over ``iters`` calls, across ranks (µs)."""

    collective: str
    algorithm: str
    op: str
    dtype: str
    size_bytes: int
    count: int
    time_avg_us: float
    time_min_us: float
    time_max_us: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: Optional[int]
    """Elements off the numpy reference, summed over ranks; None when validation is off."""
    predicted_us: Optional[float]
    warmup: int
    iters: int
    ran: Optional[str] = None
    """For ``auto``: the algorithm it ran (the pipeline as ``pipeline/<blocks>``); None otherwise."""


def header(collective: str, ranks: int, baseline: str) -> str:
    titles = "".join(f"{title:>{width}}" for title, width, _, _ in COLUMNS)
    return f"#\n# {collective}: {ranks} ranks, baseline {baseline}\n#{titles[1:]}"


def format_row(row: Row) -> str:
    cells = []
    for _, width, name, spec in COLUMNS:
        value = getattr(row, name)
        cells.append(f"{'N/A' if value is None else format(value, spec):>{width}}")
    return "".join(cells)


def summary(rows: Sequence[Row], baseline: str) -> list[str]:
    """Per op and algorithm: its time over the baseline's at the smallest size (per-call
    overhead) and its busbw over the baseline's at the largest; then what ``auto`` ran."""
    lines = []
    for op in dict.fromkeys(r.op for r in rows):
        mine = [r for r in rows if r.op == op]
        lines += _ratios(rows[0].collective, op, mine, baseline)
        lines += _choices(rows[0].collective, op, [r for r in mine if r.ran is not None])
    return lines


def _ratios(collective: str, op: str, rows: Sequence[Row], baseline: str) -> list[str]:
    smallest, largest = min(r.size_bytes for r in rows), max(r.size_bytes for r in rows)
    base = {r.size_bytes: r for r in rows if r.algorithm == baseline}
    if smallest not in base or largest not in base:
        return [f"# {collective} {op}: no {baseline} baseline to compare with"]
    lines = []
    for algorithm in dict.fromkeys(r.algorithm for r in rows if r.algorithm != baseline):
        at = {r.size_bytes: r for r in rows if r.algorithm == algorithm}
        if smallest in at and largest in at:
            latency = _ratio(at[smallest].time_avg_us, base[smallest].time_avg_us)
            bandwidth = _ratio(at[largest].busbw_gbps, base[largest].busbw_gbps)
            lines.append(f"# {collective} {op} {algorithm}: time {latency} {baseline} at {smallest} B; "
                         f"busbw {bandwidth} {baseline} at {largest} B")
    return lines


def _choices(collective: str, op: str, rows: Sequence[Row]) -> list[str]:
    """One line naming what ``auto`` ran over each run of sizes where it ran the same algorithm."""
    spans: list = []  # [algorithm, first size, last size]
    for row in sorted(rows, key=lambda r: r.size_bytes):
        if spans and spans[-1][0] == row.ran:
            spans[-1][2] = row.size_bytes
        else:
            spans.append([row.ran, row.size_bytes, row.size_bytes])
    if not spans:
        return []
    ranges = ", ".join(f"{ran} at {lo} B" if lo == hi else f"{ran} at {lo}-{hi} B" for ran, lo, hi in spans)
    return [f"# {collective} {op} auto ran: {ranges}"]


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference > 0 else "n/a x"


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[f.name for f in fields(Row)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def write_json(path: Path, rows: Sequence[Row], summaries: Sequence[str], metadata: dict,
               suites: Optional[dict] = None) -> None:
    """Rows, summary lines, metadata, and the rows of every suite that ran (by suite name)."""
    document = {"metadata": metadata, "summary": [line.lstrip("# ") for line in summaries],
                "rows": [asdict(r) for r in rows], "suites": suites or {}}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
