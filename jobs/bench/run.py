"""Running one collective of the bench job: per op and size every algorithm in turn, checked once
against the numpy reference, then warmed up and timed: a barrier, then ``iters`` calls back to back
(nccl-tests) or each alone between barriers (OSU); per-call time on each rank, then avg, min and max
across ranks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from hpcrt import Topology, backend_of
from hpcrt.costmodel.timing import rank_times

from hpcrt.collectives.costmodel.memo import auto_ran, tally_label
from hpcrt.jobs.bench.cases import Algorithm, BenchContext, Collective
from hpcrt.jobs.bench.config import BenchSettings
from hpcrt.jobs.bench.report import Row

TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
"""Relative tolerance of the check for float dtypes (reduction order and exp/log rounding);
integer results must be exact."""


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the mean, fastest and slowest rank."""

    avg: float
    min: float
    max: float


def _parts(result: Any) -> tuple:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _synchronize(result: Any) -> None:
    for part in _parts(result):
        backend_of(part).synchronize(part)


def time_calls(comm: Any, call: Callable[[], Any], warmup: int, iters: int, per_call: bool = False) -> Timing:
    """``warmup`` untimed calls, a barrier, then ``iters`` timed ones (device work included), timed
    together, or with ``per_call`` each alone after a barrier of its own: back to back, the first
    ranks of a chain (a ring All-Scan) start the next call while the last still finish this one,
    which hides the chain's latency that a scan between two compute phases pays."""
    for _ in range(warmup):
        call()
    times = rank_times(call, iters, comm, finish=_synchronize, each=per_call)
    return Timing(sum(times) / len(times), min(times), max(times))


def count_wrong(result: Any, expected: Optional[tuple], dtype: str) -> int:
    """Elements of ``result`` off ``expected`` (all of them when the structure or a shape differs)."""
    if expected is None:
        return 0
    got = [np.asarray(backend_of(part).to_host(part)).reshape(-1) for part in _parts(result)]
    if len(got) != len(expected):
        return sum(want.size for want in expected)
    wrong = 0
    for have, want in zip(got, expected):
        want = want.reshape(-1)
        if have.shape != want.shape:
            wrong += max(have.size, want.size)
        elif dtype in TOLERANCE:
            wrong += int(np.count_nonzero(~np.isclose(have, want, rtol=TOLERANCE[dtype], atol=0, equal_nan=True)))
        else:
            wrong += int(np.count_nonzero(have != want))
    return wrong


def _in_place(ctx: BenchContext, algorithm: Algorithm, operand: tuple, op: Optional[str], expected: Optional[tuple],
              settings: BenchSettings, warmup: int, iters: int) -> dict:
    """nccl-tests' in-place columns, for an algorithm with an in-place form on numpy buffers: checked
    once on a fresh copy of the input, then timed on it (its values keep changing, as in nccl-tests)."""
    if algorithm.in_place is None or settings.buffers != "numpy":
        return {}
    comm, buffer = ctx.comm, operand[0].copy()
    wrong = comm.allreduce(count_wrong(algorithm.in_place(buffer, op, ctx), expected, settings.dtype)) \
        if settings.validate else None
    with np.errstate(over="ignore", invalid="ignore"):  # repeated sums grow past the dtype's range
        timing = time_calls(comm, lambda: algorithm.in_place(buffer, op, ctx), warmup, iters,
                            settings.timing == "per_call")
    return {"time_in_place_us": timing.avg * 1e6, "wrong_in_place": wrong}


def run_collective(ctx: BenchContext, collective: Collective, algorithms: Sequence[Algorithm],
                   settings: BenchSettings, topology: Topology, emit: Callable[[Row], None]) -> list[Row]:
    """Every op, size and algorithm of one collective; ``emit`` sees each row as it completes."""
    comm, p = ctx.comm, ctx.comm.size
    dtype = np.dtype(settings.dtype)
    ops = [op for op in settings.ops if op in collective.ops] if collective.ops else [None]
    rows = []
    for op in ops:
        done = set()
        for size in settings.sizes:
            layout = collective.layout(size, p, dtype.itemsize)
            if layout.nbytes in done:  # small sizes that round to the same buffers run once
                continue
            done.add(layout.nbytes)
            operand = tuple(ctx.to_buffer(part) for part in collective.make_input(comm.rank, layout, dtype, op))
            expected = collective.reference(comm.rank, p, layout, dtype, op) if settings.validate else None
            for algorithm in (a for a in algorithms if a.runs(op)):
                call = algorithm.prepare(operand, op, ctx, layout)
                wrong = comm.allreduce(count_wrong(call(), expected, settings.dtype)) if settings.validate else None
                warmup, iters = settings.warmup_for(layout.nbytes), settings.iters_for(layout.nbytes)
                with auto_ran() as tally:
                    timing = time_calls(comm, call, warmup, iters, settings.timing == "per_call")
                algbw = layout.nbytes / timing.avg / 1e9
                predicted = algorithm.predict(layout.nbytes, p, topology, op)
                row = Row(collective.name, algorithm.name, op or "none", settings.dtype, layout.nbytes, layout.count,
                          timing.avg * 1e6, timing.min * 1e6, timing.max * 1e6, algbw,
                          algbw * collective.busbw_factor(p), wrong,
                          None if predicted is None else predicted * 1e6, warmup, iters,
                          tally_label(comm.allgather(tally)),
                          **_in_place(ctx, algorithm, operand, op, expected, settings, warmup, iters))
                rows.append(row)
                emit(row)
    return rows
