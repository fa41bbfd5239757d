"""Small measurements of the collectives, one subcommand each: ``python -m hpcrt.collectives.bench NAME``.

``overhead``: the per-call time of All-Scan and allreduce at a few bytes against mpi4py's own call
on the same buffers, as ratios of medians over interleaved blocks (run on 2 ranks by default: it
starts ``mpiexec`` itself when launched alone).
``lse``: the LSE merge kernels' bandwidth against a copy of the same bytes (collectives/attention/lse_bench.py).
``scan-blocks``: the All-Scan pipeline's time per block count beside the model's (collectives/allscan/blocks_bench.py).
``partition``: one ZeRO step, flat vs hpZ vs 3-level (collectives/partition/bench.py).
``auto``: ``auto`` beside each algorithm it picks from, size by size, in interleaved blocks
(collectives/costmodel/auto_bench.py; 2 ranks by default, launched as ``overhead`` is).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from hpcrt.collectives.allscan import blocks_bench
from hpcrt.collectives.attention import lse_bench
from hpcrt.collectives.costmodel import auto_bench
from hpcrt.collectives.partition import bench as partition_bench


def _rows(comm: Any, x: np.ndarray) -> list[tuple[str, str, Callable[[], Any]]]:
    """(label, reference label, call) of every row the overhead table times."""
    from mpi4py import MPI

    from hpcrt.collectives import all_scan, allreduce

    out = np.empty_like(x)
    return [
        ("mpi4py Exscan", "mpi4py Exscan", lambda: comm.Exscan(x, out, MPI.SUM)),
        ('all_scan(x, "sum", algorithm="mpi", validate=False)', "mpi4py Exscan",
         lambda: all_scan(x, "sum", algorithm="mpi", validate=False)),
        ('all_scan(x, "sum", validate=False)', "mpi4py Exscan", lambda: all_scan(x, "sum", validate=False)),
        ('all_scan(x, "sum", algorithm="mpi")', "mpi4py Exscan", lambda: all_scan(x, "sum", algorithm="mpi")),
        ('all_scan(x, "sum")', "mpi4py Exscan", lambda: all_scan(x, "sum")),
        ("mpi4py Allreduce", "mpi4py Allreduce", lambda: comm.Allreduce(x, out, MPI.SUM)),
        ('allreduce(x, algorithm="mpi", validate=False)', "mpi4py Allreduce",
         lambda: allreduce(x, algorithm="mpi", validate=False)),
        ("allreduce(x, validate=False)", "mpi4py Allreduce", lambda: allreduce(x, validate=False)),
        ("allreduce(x)", "mpi4py Allreduce", lambda: allreduce(x)),
    ]


def _per_call_us(comm: Any, call: Callable[[], Any], calls: int) -> float:
    """Microseconds per call of ``calls`` calls back to back, the ranks started together."""
    comm.Barrier()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def overhead(args: argparse.Namespace) -> int:
    """Print the per-call overhead table (rank 0), launching ``args.ranks`` ranks if run alone."""
    import hpcrt

    hpcrt.init({"log_files": False})
    comm = hpcrt.get_runtime().comm
    x = np.ones(max(args.bytes // 8, 1), dtype=np.float64)
    rows = _rows(comm, x)
    for _, _, call in rows:  # warm-up: caches, pools, the cost model's first choice
        for _ in range(args.calls):
            call()
    times: dict[str, list] = {label: [] for label, _, _ in rows}
    for _ in range(args.blocks):
        for label, _, call in rows:
            times[label].append(_per_call_us(comm, call, args.calls))
    if comm.rank == 0:
        medians = {label: statistics.median(values) for label, values in times.items()}
        print(f"# {comm.size} ranks, {x.nbytes} B float64, median of {args.blocks} interleaved blocks "
              f"of {args.calls} calls (rank 0)")
        print(f"| {'call':<52} | {'us/call':>8} | {'vs mpi4py':>9} |")
        print(f"|{'-' * 54}|{'-' * 10}|{'-' * 11}|")
        for label, reference, _ in rows:
            print(f"| {label:<52} | {medians[label]:8.2f} | {medians[label] / medians[reference]:8.2f}x |")
    hpcrt.finalize()
    return 0


def _launched(args: argparse.Namespace, argv: list[str]) -> Optional[int]:
    """Where a subcommand that takes ``--ranks`` runs alone (one process, no launcher), run it again
    with arguments ``argv`` under ``mpiexec -n RANKS`` and give its exit status; None where this
    process is one of the ranks."""
    from mpi4py import MPI

    if getattr(args, "ranks", 1) <= 1 or MPI.COMM_WORLD.size > 1:
        return None
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(args.ranks), sys.executable, "-m",
               "hpcrt.collectives.bench", *argv]
    return subprocess.run(command).returncode


SUBCOMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "overhead": overhead, "auto": auto_bench.run, "lse": lse_bench.run, "scan-blocks": blocks_bench.run,
    "partition": partition_bench.run}
"""Subcommand name -> function of the parsed arguments returning the exit status."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hpcrt.collectives.bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("overhead", help="per-call time against mpi4py's own call")
    timing.add_argument("--ranks", type=int, default=2, help="ranks to launch when run alone (default 2)")
    timing.add_argument("--bytes", type=int, default=8, help="message size (default 8)")
    timing.add_argument("--blocks", type=int, default=7, help="interleaved blocks (default 7)")
    timing.add_argument("--calls", type=int, default=400, help="calls per block (default 400)")
    lse_bench.add_arguments(commands.add_parser("lse", help="the LSE merge's bandwidth against a copy of its bytes"))
    blocks_bench.add_arguments(commands.add_parser("scan-blocks", help="All-Scan pipeline time per block count"))
    partition_bench.add_arguments(commands.add_parser("partition", help="one ZeRO step: flat vs hpZ vs 3-level"))
    auto_bench.add_arguments(commands.add_parser("auto", help="auto beside each algorithm it picks from, per size"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user mistake (a topology that does not fit, a bad setting) is said once,
    by rank 0, and every rank exits with 2, as ``hpcrt info`` does."""
    from hpcrt.core.abort import USER_MISTAKES, say_once_and_exit
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    launched = _launched(args, argv)
    if launched is not None:
        return launched
    try:
        return SUBCOMMANDS[args.command](args)
    except USER_MISTAKES as error:
        say_once_and_exit(f"hpcrt.collectives.bench {args.command}", error)


if __name__ == "__main__":
    sys.exit(main())
