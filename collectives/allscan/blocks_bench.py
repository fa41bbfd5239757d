"""The All-Scan pipeline's time per block count K beside the cost model's K, on every rank of the
job: how well the model's block count sits against the measured optimum. Rank 0 prints a table.

    mpiexec -n 8 python -m hpcrt.collectives.bench scan-blocks --sizes 262144 1048576 --blocks 1 4 16 64
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
import hpcrt

from hpcrt.collectives.allscan.entry import all_scan
from hpcrt.collectives.costmodel.allscan import best_blocks, predict_allscan, scan_links
from hpcrt.collectives.costmodel.calibration import calibrate, pipeline_call
from hpcrt.costmodel.timing import timed

BATCHES = 3


def time_pipeline(comm: Any, state: np.ndarray, blocks: int, calls: int) -> float:
    """Median over ``BATCHES`` batches of ``calls`` pipeline scans after one warm-up call."""
    all_scan(state, "sum", comm=comm, algorithm="pipeline", blocks=blocks, validate=False)
    return statistics.median(timed(pipeline_call(comm, state, blocks), calls, comm) for _ in range(BATCHES))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``scan-blocks`` subcommand's options."""
    parser.add_argument("--sizes", type=int, nargs="+", default=[1 << 18, 1 << 20, 1 << 22, 1 << 24],
                        help="state sizes in bytes (float32)")
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])


def run(args: argparse.Namespace) -> int:
    """Time the pipeline at every block count and size on every rank; rank 0 prints the table."""
    runtime = hpcrt.init({"log_files": False})
    try:
        comm = runtime.comm
        if comm.size < 2:
            raise SystemExit("scan-blocks: needs at least 2 ranks")
        calibrate()
        links = scan_links(runtime.costs, runtime.topology)  # what algorithm="auto" weighs
        say = print if runtime.rank == 0 else (lambda *_: None)
        say(f"# {comm.size} ranks; chain hop α {links.chain.alpha * 1e6:.1f} µs, {1e-9 / links.chain.beta:.2f} GB/s; "
            f"shift round α {links.shift.alpha * 1e6:.1f} µs, {1e-9 / links.shift.beta:.2f} GB/s; "
            f"pipeline block {links.block * 1e6:.1f} µs")
        say("# size(B)  model K  predicted(us)  " + "  ".join(f"K={k}(us)" for k in args.blocks))
        for nbytes in args.sizes:
            state = np.ones(nbytes // 4, dtype=np.float32)
            calls = max(3, min(50, (32 << 20) // max(nbytes, 1)))
            times = [time_pipeline(comm, state, k, calls) for k in args.blocks]
            model_k = best_blocks(nbytes, comm.size, links, state.size)
            predicted = predict_allscan("pipeline", nbytes, comm.size, links, model_k)
            measured = "  ".join(f"{t * 1e6:>8.0f}" for t in times)
            say(f"{nbytes:>10}  {model_k:>7}  {predicted * 1e6:>13.0f}  {measured}")
    finally:
        hpcrt.finalize()
    return 0
