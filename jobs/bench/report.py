"""The bench job's results: one row per collective, op, size and algorithm, printed as
nccl-tests prints them, summarized against the baseline, and written as CSV and JSON."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional, Sequence

from hpcrt.core.files import write_json

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
    ("in-place(us)", 13, "time_in_place_us", ".2f"),
    ("busbw(GB/s)", 12, "busbw_in_place_gbps", ".3f"),
    ("#wrong", 7, "wrong_in_place", "d"),
    ("predicted(us)", 14, "predicted_us", ".2f"),
)
IN_PLACE = {"time_in_place_us", "busbw_in_place_gbps", "wrong_in_place"}
"""The in-place columns: ``-`` for an algorithm without an in-place form (nccl-tests' out-of-place /
in-place pair, allreduce's time, busbw and #wrong written over the input)."""


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
    time_in_place_us: Optional[float] = None
    """The in-place form's time per call, averaged across ranks; None without one."""
    wrong_in_place: Optional[int] = None

    @property
    def busbw_in_place_gbps(self) -> Optional[float]:
        """The in-place form's busbw: the same bytes in its time."""
        return None if not self.time_in_place_us else self.busbw_gbps * self.time_avg_us / self.time_in_place_us


PREDICTION_MISS_FACTOR = 3.0
"""A prediction off the measured time by more than this factor, either way, is flagged ``*`` in the
table and left out of ``bench.png``: it says the cost model does not describe that algorithm there."""
CSV_COLUMNS = {"count": "count_elements", "algbw_gbps": "algbw_gbytes_s", "busbw_gbps": "busbw_gbytes_s",
               "wrong": "wrong_elements", "warmup": "warmup_calls", "iters": "timed_calls",
               "wrong_in_place": "wrong_in_place_elements"}
"""Row fields whose CSV column name says its unit (the others already do, or have none)."""


def oversubscribed(ranks_on_host: int, cores: int) -> Optional[str]:
    """The warning for more ranks than cores on a host (their times include waiting for a core), or None."""
    if ranks_on_host <= cores:
        return None
    return (f"WARNING: {ranks_on_host} ranks share {cores} core(s) on this host: times include waiting for a core "
            f"and ratios between algorithms are not what a machine with a core per rank gives")


def header(collective: str, ranks: int, baseline: str, warning: Optional[str] = None) -> str:
    titles = "".join(f"{title:>{width}}" for title, width, _, _ in COLUMNS)
    warned = f"\n# {warning}" if warning else ""
    return f"#\n# {collective}: {ranks} ranks, baseline {baseline}{warned}\n#{titles[1:]}"


def prediction_misses(row: Row) -> bool:
    """Whether the cost model's prediction is off the measured time by more than :data:`PREDICTION_MISS_FACTOR`."""
    if not row.predicted_us or row.time_avg_us <= 0:
        return False
    return max(row.predicted_us / row.time_avg_us, row.time_avg_us / row.predicted_us) > PREDICTION_MISS_FACTOR


def format_row(row: Row) -> str:
    cells = []
    for _, width, name, spec in COLUMNS:
        value = getattr(row, name)
        text = ("-" if name in IN_PLACE else "N/A") if value is None else format(value, spec)
        if name == "predicted_us" and prediction_misses(row):
            text += "*"
        cells.append(f"{text:>{width}}")
    return "".join(cells)


def summary(rows: Sequence[Row], baseline: str) -> list[str]:
    """Per op and algorithm: its time over the baseline's at the smallest size (per-call
    overhead) and its busbw over the baseline's at the largest, each with the ratio of the fastest
    and of the slowest rank's times; then what ``auto`` ran, and the predictions flagged."""
    lines = []
    for op in dict.fromkeys(r.op for r in rows):
        mine = [r for r in rows if r.op == op]
        lines += _ratios(rows[0].collective, op, mine, baseline)
        lines += _choices(rows[0].collective, op, [r for r in mine if r.ran is not None])
    missed = sum(prediction_misses(r) for r in rows)
    if missed:
        lines.append(f"# {rows[0].collective}: {missed} prediction(s) marked * are off the measured time by more "
                     f"than {PREDICTION_MISS_FACTOR:g}x and left out of bench.png")
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
            small, base_small, large, base_large = at[smallest], base[smallest], at[largest], base[largest]
            # busbw is inverse to time: the busbw ratio is the baseline's time over the algorithm's
            lines.append(f"# {collective} {op} {algorithm}: time {_ratios_of(small, base_small, False)} {baseline} "
                         f"at {smallest} B; busbw {_ratios_of(large, base_large, True)} {baseline} at {largest} B")
    return lines


def _ratios_of(mine: Row, base: Row, inverse: bool) -> str:
    """``1.20x (min 1.10x, max 1.35x)``: the ratio of average times (inverted for bandwidth), then of the
    fastest ranks' and of the slowest ranks' times."""
    pairs = [(mine.time_avg_us, base.time_avg_us), (mine.time_min_us, base.time_min_us),
             (mine.time_max_us, base.time_max_us)]
    avg, low, high = (_ratio(b, a) if inverse else _ratio(a, b) for a, b in pairs)
    return f"{avg} (min {low}, max {high})"


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


def average_bus_bandwidth(rows: Sequence[Row]) -> str:
    """nccl-tests' closing line: the mean busbw over every row of the run (GB/s)."""
    mean = sum(r.busbw_gbps for r in rows) / len(rows) if rows else 0.0
    return f"# Avg bus bandwidth    : {mean:.3f}"


def csv_row(row: Row) -> dict:
    """The row under its CSV column names (with units)."""
    return {CSV_COLUMNS.get(name, name): value for name, value in asdict(row).items()}


class ResultsFiles:
    """Rank 0's ``results.csv`` and ``results.json``, brought up to date as each row is measured, so
    that an interrupted or crashed run leaves every row it measured: the CSV gets the row appended
    and flushed, the JSON is rewritten whole (atomically, by rename)."""

    def __init__(self, run_dir: Path, metadata: dict):
        self.json_path = run_dir / "results.json"
        self.metadata = metadata
        self.rows: list[Row] = []
        self.summaries: list[str] = []
        self.suites: dict = {}
        self._csv_file = open(run_dir / "results.csv", "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=[CSV_COLUMNS.get(f.name, f.name) for f in fields(Row)])
        self._csv.writeheader()
        self._csv_file.flush()

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self._csv.writerow(csv_row(row))
        self._csv_file.flush()
        self.write_json()

    def write_json(self, stopped: Optional[str] = None) -> None:
        """Rows, summary lines, metadata (with ``stopped``: why the run ended early, or None), and
        the rows of every suite that ran (by suite name)."""
        document = {"metadata": {**self.metadata, "stopped": stopped},
                    "summary": [line.lstrip("# ") for line in self.summaries],
                    "rows": [asdict(r) for r in self.rows], "suites": self.suites}
        write_json(self.json_path, document)

    def close(self) -> None:
        self._csv_file.close()
