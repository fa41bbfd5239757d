"""The bench job's suites beyond single collectives — one ZeRO step of the hierarchical partitioner
(flat vs hpZ vs 3-level, under link emulation when the topology asks for it), the checkpointer
(against memcpy, np.save + fsync and synchronous h5py saves) and the monitor's flight recorder —
each measured beside its own baseline in the same run and printed as a table."""

from __future__ import annotations

from typing import Any, Callable

import hpcrt

SUITES = ("partition", "checkpoint", "monitor")


def _partition(runtime: hpcrt.Runtime) -> list[dict]:
    from hpcrt.collectives import run_partition_benchmark
    return run_partition_benchmark(comm=runtime.comm)


def _checkpoint(runtime: hpcrt.Runtime) -> list[dict]:
    from hpcrt.checkpoint.bench import run_checkpoint_benchmark
    return run_checkpoint_benchmark(sizes_mb=(1, 16, 64), repeats=5, loop_rounds=8, comm=runtime.comm)


def _monitor(runtime: hpcrt.Runtime) -> list[dict]:
    from hpcrt.monitor import measure_recorder_overhead
    return [measure_recorder_overhead(comm=runtime.comm)]


_RUNNERS: dict[str, Callable[[hpcrt.Runtime], list[dict]]] = {
    "partition": _partition, "checkpoint": _checkpoint, "monitor": _monitor}


def run_suite(name: str, runtime: hpcrt.Runtime) -> list[dict]:
    """Run one suite on every rank (each is collective); rank 0's rows come back."""
    return _RUNNERS[name](runtime)


def format_suite(name: str, rows: list[dict]) -> str:
    """The suite's rows as a table: one column per key, numbers to four significant digits."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(key)) for key in columns] for row in rows]
    widths = [max(len(key), *(len(r[i]) for r in cells)) for i, key in enumerate(columns)]
    lines = [f"#\n# {name}", "# " + "  ".join(k.rjust(w) for k, w in zip(columns, widths))]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "N/A"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
