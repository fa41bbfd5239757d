"""What the flight recorder costs: per record, and as a share of a training-like step. The bench
job's ``monitor`` suite calls it; alone, ``mpiexec -n 2 python -m hpcrt.monitor.bench`` prints the
same row as JSON on rank 0. Performance claims come from there, never from a timed unit test."""

from __future__ import annotations

import math
import statistics
import tempfile
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import numpy as np

from hpcrt.core import trace_hook as trace
from hpcrt.costmodel.timing import timed
from hpcrt.monitor.agent import Monitor
from hpcrt.monitor.progress import map_progress
from hpcrt.monitor.recorder import FlightRecorder

BLOCK_CALLS = 2000


def _interleaved(blocks: int, **variants: tuple) -> dict:
    """Seconds per call of each variant ``name=(prepare, fn)``: the fastest of ``blocks`` blocks of
    ``BLOCK_CALLS`` calls, the variants' blocks interleaved so that all of them meet the same
    spells of load (a neighbour on the other vCPU, which may share the physical core)."""
    best = {name: math.inf for name in variants}
    for _ in range(blocks):
        for name, (prepare, fn) in variants.items():
            prepare()
            best[name] = min(best[name], timed(fn, BLOCK_CALLS))
    return best


def _no_monitor_section(name: str) -> nullcontext:
    """What ``Monitor.section`` costs with the recorder off: a call that returns a no-op block."""
    return nullcontext()


def measure_recorder_overhead(records: int = 200_000, steps: int = 20, step_ms: float = 20.0,
                              collectives_per_step: int = 8, sections_per_step: int = 4,
                              repeats: int = 3, rounds: int = 10, comm: Optional[Any] = None) -> dict:
    """Seconds per traced collective and per section (recorder on minus off, each the fastest of
    ``records / BLOCK_CALLS`` interleaved blocks; a section off is the ``nullcontext`` that
    ``monitor.section`` gives with no monitor), and the
    share of a training-like step they take: numpy work of about ``step_ms`` with
    ``collectives_per_step`` 8-byte Allreduces (on ``comm``, default COMM_SELF) and
    ``sections_per_step`` sections.
    ``measured_step_overhead`` is the median over ``rounds`` paired blocks of ``steps`` steps;
    ``estimated_step_overhead`` is the per-record costs times the records per step.
    ``python_call_s`` (an empty call) shows how loaded the machine was."""
    from mpi4py import MPI
    comm = comm if comm is not None else MPI.COMM_SELF
    previous = trace._recorder
    recorder = FlightRecorder(4096)
    with tempfile.TemporaryDirectory() as scratch:  # progress words mapped as in a monitored rank
        recorder.progress = map_progress(Path(scratch) / "progress")
    host = SimpleNamespace(recorder=recorder, _sections=defaultdict(list), _section_blocks={})
    try:
        def collective() -> None:
            trace.trace_done(trace.trace_collective("allreduce", comm, 8))

        def section() -> None:
            with Monitor.section(host, "forward"):
                pass

        def untraced_section() -> None:  # what monitor.section gives with no monitor running
            with _no_monitor_section("forward"):
                pass

        def recorder_off() -> None:
            trace.set_recorder(None)

        def recorder_on() -> None:
            trace.set_recorder(recorder)

        best = _interleaved(max(1, records // BLOCK_CALLS), empty=(recorder_off, lambda: None),
                            off=(recorder_off, collective), on=(recorder_on, collective),
                            section_off=(recorder_off, untraced_section), section=(recorder_on, section))
        empty, off, on = best["empty"], best["off"], best["on"]
        section_s = best["section"] - best["section_off"]
        host._sections.clear()

        a = np.random.default_rng(0).random((128, 128))
        matmuls = max(1, round(step_ms / 1e3 / min(timed(lambda: a @ a, 100) for _ in range(repeats))))
        send, recv = np.ones(1), np.empty(1)

        def step(mark: Callable[[], None]) -> None:
            for i in range(matmuls):
                a @ a
                if i % max(1, matmuls // collectives_per_step) == 0:
                    token = trace.trace_collective("allreduce", comm, 8)
                    comm.Allreduce(send, recv)
                    trace.trace_done(token)
            for _ in range(sections_per_step):
                mark()

        untraced, ratios = [], []
        for _ in range(rounds):  # paired blocks, so that a noisy neighbour slows both alike
            trace.set_recorder(None)
            untraced.append(timed(lambda: step(untraced_section), steps))
            trace.set_recorder(recorder)
            ratios.append(timed(lambda: step(section), steps) / untraced[-1])
    finally:
        trace.set_recorder(previous)
    step_s = statistics.median(untraced)
    per_step = (on - off) * collectives_per_step + section_s * sections_per_step
    return {"collective_record_s": on - off, "section_record_s": section_s,
            "untraced_hook_s": off, "python_call_s": empty, "step_s": step_s,
            "records_per_step": collectives_per_step + sections_per_step,
            "estimated_step_overhead": per_step / step_s, "measured_step_overhead": statistics.median(ratios) - 1}


def main() -> None:
    """``python -m hpcrt.monitor.bench``: the recorder's costs on the job's ranks, as JSON on rank 0."""
    import argparse
    import json

    import hpcrt
    parser = argparse.ArgumentParser(prog="python -m hpcrt.monitor.bench", description=main.__doc__)
    parser.add_argument("--records", type=int, default=200_000, help="records timed per variant")
    parser.add_argument("--rounds", type=int, default=10, help="paired blocks of steps")
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    args = parser.parse_args()
    runtime = hpcrt.init({"log_files": False})
    try:
        row = measure_recorder_overhead(args.records, steps=args.steps, rounds=args.rounds, comm=runtime.comm)
    finally:
        hpcrt.finalize()
    if runtime.rank == 0:
        print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
